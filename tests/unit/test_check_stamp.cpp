// The stamp that lets a run skip the whole-index check (index/check_stamp.h): on a real file in
// a temp directory, whose filesystem keeps user extended attributes (the test says so first).
#include "index/check_stamp.h"
#include "index/index_file.h"
#include "temp_dir.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include <fstream>

using namespace snapdedupe;
using namespace snapdedupe::testing;

namespace {

constexpr int64_t kNow = 1'780'000'000;

} // namespace

TEST_CASE("check stamp: due unless the file is as stamped and its last whole check is under a week old")
{
    TempDir dir;
    const std::string index = dir.write("index.sqlite", std::string(8192, 'x'));
    CHECK(full_check_due(index, read_check_stamp(index), kNow)); // never stamped
    REQUIRE_MESSAGE(write_check_stamp(index, kNow), "the temp directory keeps no user extended attributes");

    std::optional<CheckStamp> stamp = read_check_stamp(index);
    REQUIRE(stamp);
    CHECK(stamp->checked_at == kNow);
    CHECK(stamp->size == 8192);
    CHECK_FALSE(full_check_due(index, stamp, kNow));
    CHECK_FALSE(full_check_due(index, stamp, kNow + kFullCheckEvery - 1));
    CHECK(full_check_due(index, stamp, kNow + kFullCheckEvery)); // a week on
    CHECK(full_check_due(index, stamp, kNow - 3600));            // a clock set back

    SUBCASE("a -wal file beside it: a run was killed, or one is running")
    {
        dir.write("index.sqlite-wal", "");
        CHECK(full_check_due(index, stamp, kNow));
    }
    SUBCASE("written in place, same size: its mtime moved")
    {
        struct stat before;
        REQUIRE(::stat(index.c_str(), &before) == 0);
        struct timespec later[2] = {before.st_atim, before.st_mtim};
        later[1].tv_nsec = (later[1].tv_nsec + 1) % 1'000'000'000;
        later[1].tv_sec += later[1].tv_nsec == 0 ? 1 : 0;
        { std::fstream(index, std::ios::in | std::ios::out | std::ios::binary).write("y", 1); }
        REQUIRE(::utimensat(AT_FDCWD, index.c_str(), later, 0) == 0);
        CHECK(full_check_due(index, read_check_stamp(index), kNow));
    }
    SUBCASE("replaced by a copy: another inode")
    {
        const std::string copy = dir.write("copy", std::string(8192, 'x'));
        REQUIRE(::rename(copy.c_str(), index.c_str()) == 0);
        CHECK(full_check_due(index, stamp, kNow));
        CHECK_FALSE(read_check_stamp(index)); // the copy carries no stamp
    }
    SUBCASE("a stamp that does not parse is none")
    {
        REQUIRE(::setxattr(index.c_str(), "user.snapdedupe.checked", "2 x", 3, 0) == 0);
        CHECK_FALSE(read_check_stamp(index));
        CHECK(full_check_due(index, read_check_stamp(index), kNow));
    }
}

// What the stamp spares: open_index without the whole check does not read a page the run would
// not touch; with it, the damage is refused (exit code 5).
TEST_CASE("check stamp: without the whole check, a damaged page the opening does not read passes")
{
    TempDir dir;
    const std::string path = dir.path("index.sqlite");
    const std::string uuid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    {
        std::unique_ptr<Database> db = open_index(path, uuid, false);
        db->exec("CREATE TABLE filler (x BLOB)");
        db->exec("INSERT INTO filler WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c LIMIT 2000) "
                 "SELECT randomblob(100) FROM c");
    } // closed: the -wal file is copied in and removed
    {
        std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(0, std::ios::end);
        const std::streamoff size = f.tellp();
        REQUIRE(size > 16 * 4096);
        f.seekp(size - 4096);
        f.write(std::string(4096, '\x5a').data(), 4096);
    }
    CHECK_NOTHROW(open_index(path, uuid, false, {}, false));
    try {
        open_index(path, uuid, false, {}, true);
        FAIL("the damaged page passed the whole check");
    } catch (const Error& e) {
        CHECK(e.exit_code() == ExitCode::kBadIndex);
    }
}
