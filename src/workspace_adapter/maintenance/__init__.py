"""Fork maintenance (SPEC §7): rebase a fork onto an upstream release, verify, publish."""
