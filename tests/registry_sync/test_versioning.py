"""The registry's latest-version rule."""

from datetime import UTC, datetime

from registry_sync.versioning import VersionFacts, is_semver, pick_latest, semver_key

T1 = datetime(2025, 1, 1, tzinfo=UTC)
T2 = datetime(2025, 2, 1, tzinfo=UTC)


def test_semver_precedence():
    assert semver_key("1.10.0") > semver_key("1.9.0")
    assert semver_key("1.0.0") > semver_key("1.0.0-rc.1")
    assert semver_key("1.0.0-rc.10") > semver_key("1.0.0-rc.2")
    assert semver_key("1.0.0-beta") > semver_key("1.0.0-2")  # alphanumeric > numeric
    assert semver_key("1.0.0-alpha.1") > semver_key("1.0.0-alpha")
    assert semver_key("1.0.0+a") == semver_key("1.0.0+b")
    for text in ("v1.0.0", "auto", "{{VERSION}}", "1.0", "01.0.0", "v16.28.1-2"):
        assert not is_semver(text)


def test_pick_latest_rules():
    assert pick_latest([]) is None
    # semver beats non-semver whatever the publish time
    assert (
        pick_latest([VersionFacts("1.0.0", T1, False), VersionFacts("auto", T2, False)]) == "1.0.0"
    )
    # two non-semver: the newer publish wins
    assert pick_latest([VersionFacts("mcp", T2, False), VersionFacts("auto", T1, False)]) == "mcp"
    # deleted versions lose unless everything is deleted
    assert (
        pick_latest([VersionFacts("2.0.0", T2, True), VersionFacts("1.0.0", T1, False)]) == "1.0.0"
    )
    assert (
        pick_latest([VersionFacts("2.0.0", T2, True), VersionFacts("1.0.0", T1, True)]) == "2.0.0"
    )
