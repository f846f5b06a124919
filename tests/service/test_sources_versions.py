"""Release tags in the order a person reads them."""

from __future__ import annotations

from workspace_adapter.sources.release import Release, matching, order_releases
from workspace_adapter.sources.versions import version_key


def sort_tags(tags: list[str]) -> list[str]:
    return sorted(tags, key=version_key)


def test_versions_sort_by_number_not_by_text() -> None:
    assert sort_tags(["v0.1.10", "v0.1.9", "v0.2.0", "v0.1.2"]) == [
        "v0.1.2",
        "v0.1.9",
        "v0.1.10",
        "v0.2.0",
    ]


def test_a_pre_release_comes_before_its_final_and_a_build_suffix_does_not_count() -> None:
    assert sort_tags(["1.0.0", "1.0.0-rc.2", "1.0.0-rc.10", "1.0.0-beta", "0.9"]) == [
        "0.9",
        "1.0.0-beta",
        "1.0.0-rc.2",
        "1.0.0-rc.10",
        "1.0.0",
    ]
    assert sort_tags(["1.0.1", "1.0.0+build.7"]) == ["1.0.0+build.7", "1.0.1"]


def test_non_versions_come_last_in_their_given_order() -> None:
    tags = ["nightly", "v1.0.0", "latest", "v0.9.0", "alpha-build"]
    assert sort_tags(tags) == ["v0.9.0", "v1.0.0", "nightly", "latest", "alpha-build"]
    assert version_key("nightly") > version_key("v99.0.0")
    assert version_key("release-2.3") < version_key("release-2.10")


def test_order_releases_keeps_one_per_tag_and_patterns_fullmatch() -> None:
    found = [
        Release(tag="v0.1.3", provider="git", sha="a"),
        Release(tag="v0.1.3", provider="git", sha="b"),
        Release(tag="v0.1.10", provider="git"),
        Release(tag="v0.1.3-rc1", provider="git"),
    ]
    ordered = order_releases(found)
    assert [r.tag for r in ordered] == ["v0.1.3-rc1", "v0.1.3", "v0.1.10"]
    assert ordered[1].sha == "a"
    # fullmatch: "v0.1.3-rc1" starts like a release but is not one.
    assert [r.tag for r in matching(ordered, r"v\d+\.\d+\.\d+")] == ["v0.1.3", "v0.1.10"]
    assert matching(ordered, None) == ordered
