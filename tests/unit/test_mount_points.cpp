// names_with_mounts against this process's real mount table: /proc is mounted on every Linux
// that can run the test (the function reads /proc/self/mountinfo), and a fresh directory holds
// no mounts.
#include "snapshots/kernel/mount_points.h"
#include "temp_dir.h"

#include <doctest/doctest.h>

#include <filesystem>

using namespace snapdedupe;
using namespace snapdedupe::testing;

TEST_CASE("names_with_mounts: the root directory's entries with mounts include proc")
{
    std::optional<std::set<std::string>> names = names_with_mounts(open_directory("/"));
    REQUIRE(names);
    CHECK(names->count("proc") == 1);
    for (const std::string& name : *names) // first components only
        CHECK(name.find('/') == std::string::npos);
}

TEST_CASE("names_with_mounts: a fresh directory has none, through any path to it")
{
    TempDir dir;
    std::filesystem::create_directory(dir.path("sub dir")); // a space: mountinfo escapes it as \040
    std::optional<std::set<std::string>> names = names_with_mounts(open_directory(dir.path("sub dir")));
    REQUIRE(names);
    CHECK(names->empty());
    // /proc holds mounts below it (/proc/sys/fs/binfmt_misc on most hosts) or none; either way
    // "proc" is not a name inside /proc, so /proc's own mount must not be reported there.
    std::optional<std::set<std::string>> in_proc = names_with_mounts(open_directory("/proc"));
    REQUIRE(in_proc);
    CHECK(in_proc->count("proc") == 0);
}
