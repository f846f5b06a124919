"""Fork maintenance: rebase a fork onto an upstream release, verify, publish."""
