// Change sets from real fixture streams and from hand-fed command sequences.
#include "snapshots/change_set.h"
#include "snapshots/send_stream.h"
#include "snapshots/kernel/unique_fd.h"

#include <doctest/doctest.h>
#include <fcntl.h>

#include <cctype>
#include <memory>
#include <ostream>

using namespace snapdedupe;
using send::Command;
using send::SendCommand;

namespace snapdedupe {
// So doctest can print mismatches.
std::ostream& operator<<(std::ostream& os, const ByteRange& r)
{
    return os << "[" << r.offset << "+" << r.length << "]";
}
} // namespace snapdedupe

namespace {

using Strings = std::vector<std::string>;
using Ranges = std::vector<ByteRange>;
using Renames = std::vector<std::pair<std::string, std::string>>;

// Change sets of each subvolume in a fixture stream, in order.
std::vector<ChangeSet> change_sets_of(const std::string& name)
{
    std::string path = std::string(SNAPDEDUPE_FIXTURES) + "/streams/" + name + ".stream";
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(fd.valid());
    send::SendStreamParser parser(fd.get(), path);
    std::vector<ChangeSet> sets;
    auto builder = std::make_unique<ChangeSetBuilder>(); // one per subvolume
    SendCommand cmd;
    while (parser.next(cmd)) {
        builder->apply(cmd);
        if (cmd.cmd == Command::END) {
            sets.push_back(builder->finish());
            builder = std::make_unique<ChangeSetBuilder>();
        }
    }
    return sets;
}

ChangeSet change_set_of(const std::string& name)
{
    auto sets = change_sets_of(name);
    REQUIRE(sets.size() == 1);
    return sets.front();
}

const FileChange* find_file(const ChangeSet& cs, const std::string& path)
{
    for (const auto& f : cs.files)
        if (f.path == path)
            return &f;
    return nullptr;
}

bool mentions_orphan(const ChangeSet& cs)
{
    auto orphan = [](const std::string& p) { return p.size() > 1 && p[0] == 'o' && std::isdigit(p[1]); };
    for (const auto& f : cs.files)
        if (orphan(f.path))
            return true;
    for (const auto* list : {&cs.added, &cs.removed})
        for (const auto& p : *list)
            if (orphan(p))
                return true;
    for (const auto& [from, to] : cs.renamed)
        if (orphan(from) || orphan(to))
            return true;
    return false;
}

// Hand-made commands.
SendCommand make(Command c, std::string path)
{
    SendCommand cmd;
    cmd.cmd = c;
    cmd.path = std::move(path);
    return cmd;
}
SendCommand snapshot() { return make(Command::SNAPSHOT, "snap"); }
SendCommand rename_cmd(std::string from, std::string to)
{
    auto cmd = make(Command::RENAME, std::move(from));
    cmd.path_to = std::move(to);
    return cmd;
}
SendCommand link_cmd(std::string new_name, std::string existing)
{
    auto cmd = make(Command::LINK, std::move(new_name));
    cmd.path_link = std::move(existing);
    return cmd;
}
SendCommand write_cmd(std::string path, uint64_t offset, uint64_t len)
{
    auto cmd = make(Command::WRITE, std::move(path));
    cmd.file_offset = offset;
    cmd.data_len = len;
    return cmd;
}
SendCommand update_extent(std::string path, uint64_t offset, uint64_t len)
{
    auto cmd = make(Command::UPDATE_EXTENT, std::move(path));
    cmd.file_offset = offset;
    cmd.size = len;
    return cmd;
}
SendCommand truncate_cmd(std::string path, uint64_t size)
{
    auto cmd = make(Command::TRUNCATE, std::move(path));
    cmd.size = size;
    return cmd;
}

ChangeSet run(std::initializer_list<SendCommand> cmds)
{
    ChangeSetBuilder builder;
    for (const auto& c : cmds)
        builder.apply(c);
    return builder.finish();
}

} // namespace

TEST_CASE("fixture: a renamed directory gives its files their final paths")
{
    auto cs = change_set_of("v1-nodata-dir-rename");
    CHECK(cs.renamed == Renames{{"a", "z"}}); // the directory only, not each file below
    REQUIRE(cs.files.size() == 1);
    CHECK(cs.files[0].path == "z/b/f");
    CHECK(cs.files[0].ranges == Ranges{{4096, 4096}});
    CHECK_FALSE(cs.files[0].created);
    CHECK(cs.added.empty());
    CHECK(cs.removed.empty());
}

TEST_CASE("fixture: swapped names go through an orphan that resolves")
{
    auto cs = change_set_of("v1-nodata-orphan-swap");
    CHECK(cs.renamed == Renames{{"x", "y"}, {"y", "x"}});
    REQUIRE(cs.files.size() == 1);
    CHECK(cs.files[0].path == "y");
    CHECK(cs.files[0].ranges == Ranges{{0, 4096}});
    CHECK(cs.added.empty());
    CHECK(cs.removed.empty());
    CHECK_FALSE(mentions_orphan(cs));
}

TEST_CASE("fixture: unlinking one hard link keeps the data on the other name")
{
    auto cs = change_set_of("v1-nodata-hardlink-unlink");
    REQUIRE(cs.files.size() == 1);
    CHECK(cs.files[0].path == "second");
    CHECK(cs.files[0].ranges == Ranges{{0, 4096}});
    CHECK(cs.removed == Strings{"first"});
    CHECK(cs.changed_bytes() == 4096);
}

TEST_CASE("fixture: truncate keeps ranges inside the new size")
{
    auto cs = change_set_of("v1-nodata-truncate");
    REQUIRE(cs.files.size() == 1);
    CHECK(cs.files[0].path == "t");
    CHECK(cs.files[0].ranges == Ranges{{8192, 20000 - 8192}});
}

TEST_CASE("fixture: everything --no-data emits")
{
    auto cs = change_set_of("v1-nodata-all");
    CHECK(cs.renamed == Renames{{"olddir", "newdir"}, {"ren.txt", "renamed.txt"}, {"swapA", "swapB"}, {"swapB", "swapA"}});
    CHECK(cs.added == Strings{"clone.txt", "fifo", "hl2.txt", "link", "new.txt", "newd", "newd/inner.txt",
                              "newd/null", "sock"});
    CHECK(cs.removed == Strings{"gone.txt", "gonedir", "gonedir/inner", "gonedir/inner/g"});
    REQUIRE(cs.files.size() == 5);
    struct Expected { const char* path; Ranges ranges; bool created; };
    for (const Expected& e : {Expected{"clone.txt", {{0, 65536}}, true}, Expected{"mod.txt", {{16384, 4096}}, false},
                              Expected{"new.txt", {{0, 12288}}, true}, Expected{"newd/inner.txt", {{0, 4096}}, true},
                              Expected{"newdir/f1", {{0, 4096}}, false}}) {
        CAPTURE(e.path);
        const FileChange* f = find_file(cs, e.path);
        REQUIRE(f != nullptr);
        CHECK(f->ranges == e.ranges);
        CHECK(f->created == e.created);
    }
    CHECK(find_file(cs, "trunc.txt") == nullptr); // truncated only: no data to dedupe
    CHECK(cs.changed_bytes() == 65536 + 4096 + 12288 + 4096 + 4096);
    CHECK_FALSE(mentions_orphan(cs));
}

TEST_CASE("fixture: full streams, several subvolumes, protocol 2")
{
    auto full = change_set_of("v1-full-data");
    CHECK(full.added == Strings{"big", "d", "d/small", "s"});
    REQUIRE(full.files.size() == 2);
    CHECK(full.files[0].path == "big");
    CHECK(full.files[0].ranges == Ranges{{0, 9000}});
    CHECK(full.files[0].created);
    CHECK(full.files[1].path == "d/small");

    auto two = change_sets_of("v1-nodata-two-subvols");
    REQUIRE(two.size() == 2);
    CHECK(two[0].added == Strings{"a", "a/b", "a/b/f", "a/g"});
    REQUIRE(two[1].files.size() == 1); // one inode, two names
    CHECK(two[1].files[0].path == "first");
    CHECK(two[1].added == Strings{"first", "second"});

    auto v2 = change_set_of("v2-compressed");
    REQUIRE(v2.files.size() == 1); // "holey" only had a hole punched
    CHECK(v2.files[0].path == "packed");
    CHECK(v2.files[0].ranges == Ranges{{0, 262144}});
    CHECK(v2.added == Strings{"packed"});
}

TEST_CASE("one builder refuses a second subvolume")
{
    ChangeSetBuilder builder;
    builder.apply(snapshot());
    CHECK_THROWS_AS(builder.apply(snapshot()), std::runtime_error);
}

TEST_CASE("synthetic: an orphan created and renamed is added under its final name")
{
    auto cs = run({snapshot(), make(Command::MKFILE, "o300-7-0"), update_extent("o300-7-0", 0, 100),
                   rename_cmd("o300-7-0", "dir/x"), make(Command::MKDIR, "o301-7-0"), rename_cmd("o301-7-0", "dir/sub")});
    CHECK(cs.added == Strings{"dir/sub", "dir/x"});
    CHECK(cs.renamed.empty());
    REQUIRE(cs.files.size() == 1);
    CHECK(cs.files[0].path == "dir/x");
    CHECK(cs.files[0].created);
}

TEST_CASE("synthetic: a directory rename moves every tracked path below it")
{
    auto cs = run({snapshot(), write_cmd("a/f1", 0, 10), make(Command::MKFILE, "a/new"), write_cmd("a/new", 0, 5),
                   rename_cmd("a", "b"), write_cmd("b/f2", 0, 20), make(Command::UNLINK, "b/old"), rename_cmd("b/deep/g", "g")});
    CHECK(cs.renamed == Renames{{"a", "b"}, {"a/deep/g", "g"}});
    CHECK(cs.added == Strings{"b/new"});
    CHECK(cs.removed == Strings{"a/old"}); // removed paths are parent-snapshot paths
    REQUIRE(cs.files.size() == 3);
    CHECK(cs.files[0].path == "b/f1");
    CHECK(cs.files[1].path == "b/f2");
    CHECK(cs.files[2].path == "b/new");
}

TEST_CASE("synthetic: data belongs to the inode, not the name")
{
    auto cs = run({snapshot(), make(Command::MKFILE, "o1-1-0"), rename_cmd("o1-1-0", "n1"), write_cmd("n1", 0, 100),
                   link_cmd("n2", "n1"), write_cmd("n2", 100, 50), make(Command::UNLINK, "n1"), write_cmd("old", 0, 1),
                   link_cmd("old2", "old"), make(Command::UNLINK, "old")});
    REQUIRE(cs.files.size() == 2);
    CHECK(cs.files[0].path == "n2");
    CHECK(cs.files[0].ranges == Ranges{{0, 150}});
    CHECK(cs.files[1].path == "old2");
    CHECK(cs.added == Strings{"n2"});
    CHECK(cs.renamed == Renames{{"old", "old2"}}); // link + unlink of an old inode is a move
}

TEST_CASE("synthetic: truncate clips, punched holes cut, ranges merge")
{
    SendCommand punch = make(Command::FALLOCATE, "f");
    punch.fallocate_mode = 3; // PUNCH_HOLE | KEEP_SIZE
    punch.file_offset = 40;
    punch.size = 20;
    SendCommand prealloc = punch;
    prealloc.fallocate_mode = 0;
    prealloc.file_offset = 5000;
    auto cs = run({snapshot(), write_cmd("f", 200, 100), write_cmd("f", 0, 100), write_cmd("f", 50, 100), truncate_cmd("f", 250),
                   write_cmd("f", 1000, 10), punch, prealloc});
    REQUIRE(cs.files.size() == 1);
    CHECK(cs.files[0].ranges == Ranges{{0, 40}, {60, 90}, {200, 50}, {1000, 10}});
    CHECK(cs.changed_bytes() == 40 + 90 + 50 + 10);
}

TEST_CASE("synthetic: clone and encoded write ranges, non-files stay out of files")
{
    SendCommand clone = make(Command::CLONE, "c");
    clone.file_offset = 4096;
    clone.clone_len = 8192;
    clone.clone_path = "elsewhere";
    clone.clone_offset = 0;
    SendCommand encoded = make(Command::ENCODED_WRITE, "e");
    encoded.file_offset = 0;
    encoded.unencoded_file_len = 131072;
    encoded.data_len = 900;
    SendCommand sym = make(Command::SYMLINK, "s");
    sym.path_link.emplace("c"); // not `= "c"`: GCC 12 -O2 -Wrestrict false positive (PR105329)
    auto cs = run({snapshot(), clone, encoded, make(Command::MKDIR, "d"), sym, make(Command::MKNOD, "d/n"),
                   make(Command::MKFIFO, "p"), make(Command::MKSOCK, "k"), make(Command::CHMOD, "d")});
    REQUIRE(cs.files.size() == 2);
    CHECK(cs.files[0].path == "c");
    CHECK(cs.files[0].ranges == Ranges{{4096, 8192}});
    CHECK(cs.files[1].ranges == Ranges{{0, 131072}});
    CHECK(cs.added == Strings{"d", "d/n", "k", "p", "s"});
}

TEST_CASE("synthetic: rmdir, rename over an entry, missing paths")
{
    auto cs = run({snapshot(), make(Command::UNLINK, "dir/f"), make(Command::RMDIR, "dir"),
                   make(Command::MKFILE, "o9-1-0"), rename_cmd("o9-1-0", "victim")});
    CHECK(cs.removed == Strings{"dir", "dir/f"});
    CHECK(cs.added == Strings{"victim"});

    // Renaming onto a known name replaces that entry, as rename_cmd(2) does.
    cs = run({snapshot(), write_cmd("victim", 0, 1), make(Command::MKFILE, "o9-1-0"), rename_cmd("o9-1-0", "victim")});
    CHECK(cs.removed == Strings{"victim"});
    CHECK(cs.added == Strings{"victim"});
    CHECK(cs.files.empty());

    ChangeSetBuilder full;
    full.apply(make(Command::SUBVOL, "s"));
    CHECK_THROWS_AS(full.apply(write_cmd("never-created", 0, 1)), std::runtime_error);
    ChangeSetBuilder gone;
    gone.apply(snapshot());
    gone.apply(make(Command::UNLINK, "x"));
    CHECK_THROWS_AS(gone.apply(write_cmd("x", 0, 1)), std::runtime_error);
    CHECK_THROWS_AS(gone.apply(make(Command::RENAME, "y")), std::runtime_error); // lacks PATH_TO
}
