// Change sets from real fixture streams and from hand-fed command sequences.
#include "snapshots/change_set.h"
#include "snapshots/send_stream.h"
#include "snapshots/kernel/unique_fd.h"

#include <doctest/doctest.h>
#include <fcntl.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
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
    LabeledFd stream(UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC)), path);
    REQUIRE(stream.valid());
    send::SendStreamParser parser(stream);
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

namespace {
// As change_sets_of and run above, with builders that keep the diff's view.
ChangeSet diff_view_of(const std::string& name)
{
    std::string path = std::string(SNAPDEDUPE_FIXTURES) + "/streams/" + name + ".stream";
    LabeledFd stream(UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC)), path);
    REQUIRE(stream.valid());
    send::SendStreamParser parser(stream);
    ChangeSetBuilder builder(ChangeSetBuilder::View::kDiff);
    SendCommand cmd;
    while (parser.next(cmd))
        builder.apply(cmd);
    return builder.finish();
}
ChangeSet run_diff(std::initializer_list<SendCommand> cmds)
{
    ChangeSetBuilder builder(ChangeSetBuilder::View::kDiff);
    for (const auto& c : cmds)
        builder.apply(c);
    return builder.finish();
}
bool same_files(const ChangeSet& a, const ChangeSet& b)
{
    if (a.files.size() != b.files.size())
        return false;
    for (std::size_t i = 0; i < a.files.size(); ++i)
        if (a.files[i].path != b.files[i].path || a.files[i].ranges != b.files[i].ranges ||
            a.files[i].created != b.files[i].created)
            return false;
    return a.added == b.added && a.removed == b.removed && a.renamed == b.renamed;
}
const TruncatedFile* find_truncated(const ChangeSet& cs, const std::string& path)
{
    for (const auto& t : cs.truncated)
        if (t.path == path)
            return &t;
    return nullptr;
}
unsigned kinds_of(const ChangeSet& cs, const std::string& path)
{
    for (const auto& m : cs.metadata)
        if (m.path == path)
            return m.kinds;
    return 0;
}
SendCommand created(Command c, std::string path, uint64_t ino)
{
    auto cmd = make(c, std::move(path));
    cmd.ino = ino;
    return cmd;
}
} // namespace

TEST_CASE("fixture: a truncate-only change is listed, its old size unknown; metadata by kind")
{
    auto cs = diff_view_of("v1-nodata-all");
    CHECK(find_file(cs, "trunc.txt") == nullptr); // still nothing to dedupe ...
    REQUIRE(cs.truncated.size() == 1);            // ... but the diff names it
    CHECK(cs.truncated[0] == TruncatedFile{"trunc.txt", std::nullopt, 10000, false});
    CHECK(kinds_of(cs, "perms.txt") == (kMetadataMode | kMetadataTimes));
    CHECK(kinds_of(cs, "own.txt") == (kMetadataOwner | kMetadataTimes));
    CHECK(kinds_of(cs, "xattr.txt") == (kMetadataXattr | kMetadataTimes)); // set and removed
    CHECK(kinds_of(cs, "times.txt") == kMetadataTimes);
    CHECK(kinds_of(cs, ".") == kMetadataTimes); // the subvolume root
    CHECK(kinds_of(cs, "link") == (kMetadataOwner | kMetadataTimes)); // no chmod for a symlink
    CHECK(kinds_of(cs, "newd") == (kMetadataMode | kMetadataOwner | kMetadataTimes));
    CHECK(kinds_of(cs, "hl.txt") == kMetadataTimes); // a hard-linked inode under its first name
    CHECK(kinds_of(cs, "hl2.txt") == 0);
    for (const auto& m : cs.metadata) {
        CAPTURE(m.path);
        CHECK(m.created == (std::find(cs.added.begin(), cs.added.end(), m.path) != cs.added.end()));
    }
    // Inode numbers: only create commands carry INO, so only new inodes have one.
    CHECK(cs.inode_numbers == std::map<std::string, uint64_t>{{"clone.txt", 276}, {"fifo", 281}, {"link", 283},
                                                               {"new.txt", 277}, {"newd", 278},
                                                               {"newd/inner.txt", 279}, {"newd/null", 280},
                                                               {"sock", 282}});

    auto t = diff_view_of("v1-nodata-truncate"); // data and a truncate: in both lists
    REQUIRE(t.truncated.size() == 1);
    CHECK(t.truncated[0] == TruncatedFile{"t", std::nullopt, 20000, false});
    REQUIRE(t.files.size() == 1);
}

TEST_CASE("synthetic: truncation keeps files as it was and lists old and new size")
{
    // Parent files: the stream never says their old size.
    auto cs = run_diff({snapshot(), truncate_cmd("shrunk", 100), write_cmd("both", 0, 4096), truncate_cmd("both", 1000),
                   truncate_cmd("twice", 5000), truncate_cmd("twice", 7000), write_cmd("twice", 9000, 100)});
    REQUIRE(cs.truncated.size() == 3);
    CHECK(cs.truncated[0] == TruncatedFile{"both", std::nullopt, 1000, false});
    CHECK(cs.truncated[1] == TruncatedFile{"shrunk", std::nullopt, 100, false});
    // The first TRUNCATE fixed the size: from there the stream knows it; later data grows it.
    CHECK(cs.truncated[2] == TruncatedFile{"twice", std::nullopt, 9100, false});
    CHECK(find_truncated(cs, "shrunk") != nullptr);
    REQUIRE(cs.files.size() == 2); // the run's view: only data, clipped by the truncate
    CHECK(cs.files[0].path == "both");
    CHECK(cs.files[0].ranges == Ranges{{0, 1000}});
    CHECK(cs.files[1].path == "twice");
    CHECK(cs.files[1].ranges == Ranges{{9000, 100}});

    // An inode made in the stream starts empty: its size before the TRUNCATE is known.
    SendCommand prealloc = make(Command::FALLOCATE, "n");
    prealloc.fallocate_mode = 0; // grows the size
    prealloc.file_offset = 0;
    prealloc.size = 30000;
    SendCommand keep = prealloc;
    keep.fallocate_mode = 1; // KEEP_SIZE: does not
    keep.size = 90000;
    cs = run_diff({snapshot(), created(Command::MKFILE, "o300-7-0", 300), rename_cmd("o300-7-0", "n"),
              update_extent("n", 0, 8192), truncate_cmd("n", 20000), prealloc, keep,
              created(Command::MKFILE, "o301-7-0", 301), rename_cmd("o301-7-0", "hole"), truncate_cmd("hole", 4096),
              created(Command::MKFILE, "o302-7-0", 302), truncate_cmd("o302-7-0", 1),
              make(Command::UNLINK, "o302-7-0")});
    REQUIRE(cs.truncated.size() == 2); // the unlinked one has no name left
    CHECK(cs.truncated[0] == TruncatedFile{"hole", 0, 4096, true});
    CHECK(cs.truncated[1] == TruncatedFile{"n", 8192, 30000, true});
    REQUIRE(cs.files.size() == 1);
    CHECK(cs.files[0].ranges == Ranges{{0, 8192}});
    CHECK(cs.inode_numbers == std::map<std::string, uint64_t>{{"hole", 301}, {"n", 300}});

    // A hard-linked file is listed once, under the name `files` would use.
    cs = run_diff({snapshot(), link_cmd("b", "a"), truncate_cmd("b", 0), write_cmd("b", 0, 10)});
    REQUIRE(cs.truncated.size() == 1);
    CHECK(cs.truncated[0].path == "a");
    REQUIRE(cs.files.size() == 1);
    CHECK(cs.files[0].path == "a");
}

TEST_CASE("synthetic: the same data commands give the same files with or without the new kinds")
{
    SendCommand punch = make(Command::FALLOCATE, "f");
    punch.fallocate_mode = 3;
    punch.file_offset = 40;
    punch.size = 20;
    auto plain = run_diff({snapshot(), write_cmd("f", 0, 300), truncate_cmd("f", 250), punch, write_cmd("g", 5, 5)});
    auto noisy = run_diff({snapshot(), make(Command::CHMOD, "f"), write_cmd("f", 0, 300), make(Command::UTIMES, "f"),
                      truncate_cmd("f", 250), make(Command::SET_XATTR, "f"), punch, make(Command::CHOWN, "g"),
                      write_cmd("g", 5, 5), make(Command::REMOVE_XATTR, "g"), make(Command::UTIMES, "")});
    REQUIRE(plain.files.size() == 2);
    REQUIRE(noisy.files.size() == 2);
    for (std::size_t i = 0; i < 2; ++i) {
        CHECK(plain.files[i].path == noisy.files[i].path);
        CHECK(plain.files[i].ranges == noisy.files[i].ranges);
        CHECK(plain.files[i].created == noisy.files[i].created);
    }
    CHECK(plain.changed_bytes() == noisy.changed_bytes());
    CHECK(plain.metadata.empty());
    CHECK(noisy.truncated == plain.truncated);
}

TEST_CASE("synthetic: metadata commands are listed per path by kind")
{
    SendCommand fileattr = make(Command::FILEATTR, "d/x");
    fileattr.fileattr = 0x10;
    auto cs = run_diff({snapshot(), make(Command::CHMOD, "d/x"), make(Command::CHOWN, "d/x"), make(Command::UTIMES, "d/x"),
                   make(Command::SET_XATTR, "d/x"), fileattr, make(Command::ENABLE_VERITY, "d/x"),
                   make(Command::REMOVE_XATTR, "d"), make(Command::UTIMES, ""), make(Command::CHMOD, "gone"),
                   make(Command::UNLINK, "gone"), rename_cmd("d", "e"), created(Command::MKDIR, "o5-1-0", 5),
                   make(Command::CHOWN, "o5-1-0"), rename_cmd("o5-1-0", "e/new")});
    REQUIRE(cs.metadata.size() == 4); // "gone" has no name left
    CHECK(cs.metadata[0] == MetadataChange{".", kMetadataTimes, false});
    CHECK(cs.metadata[1] == MetadataChange{"e", kMetadataXattr, false}); // final paths
    CHECK(cs.metadata[2] == MetadataChange{"e/new", kMetadataOwner, true});
    CHECK(cs.metadata[3].path == "e/x");
    CHECK(metadata_kind_names(cs.metadata[3].kinds) == "mode,owner,times,xattr,fileattr,verity");
    CHECK(metadata_kind_names(kMetadataTimes | kMetadataMode) == "mode,times");
    CHECK(cs.files.empty());
    CHECK(cs.truncated.empty());
    CHECK(cs.inode_numbers == std::map<std::string, uint64_t>{{"e/new", 5}});
    CHECK(cs.renamed == Renames{{"d", "e"}});
}

TEST_CASE("the run's view: the same files, renames and names as the diff's, and none of its extras")
{
    for (const char* name : {"v1-nodata-all", "v1-nodata-truncate", "v1-nodata-orphan-swap", "v1-full-data",
                             "v2-compressed"}) {
        CAPTURE(name);
        ChangeSet run_view = change_set_of(name), diff_view = diff_view_of(name);
        CHECK(same_files(run_view, diff_view));
        CHECK(run_view.changed_bytes() == diff_view.changed_bytes());
        CHECK(run_view.truncated.empty());
        CHECK(run_view.metadata.empty());
        CHECK(run_view.inode_numbers.empty());
        CHECK_FALSE(diff_view.metadata.empty());
    }
    std::initializer_list<SendCommand> cmds = {snapshot(), created(Command::MKFILE, "o9-1-0", 9),
                                               rename_cmd("o9-1-0", "n"), write_cmd("n", 0, 50), truncate_cmd("n", 20),
                                               truncate_cmd("old", 0), make(Command::CHMOD, "old")};
    ChangeSet r = run(cmds), d = run_diff(cmds);
    CHECK(same_files(r, d));
    CHECK(r.truncated.empty());
    CHECK(d.truncated.size() == 2);
}

TEST_CASE("the diff's view of the fuzz regression inputs: an error or a change set, never a crash")
{
    namespace fs = std::filesystem;
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(fs::path(SNAPDEDUPE_FIXTURES) / "fuzz-regressions"))
        if (entry.is_regular_file())
            files.push_back(entry.path());
    std::sort(files.begin(), files.end());
    REQUIRE_FALSE(files.empty());
    for (const auto& file : files) {
        INFO(file.filename().string());
        LabeledFd stream(UniqueFd(::open(file.c_str(), O_RDONLY | O_CLOEXEC)), file.filename().string());
        REQUIRE(stream.valid());
        std::string error;
        try {
            send::SendStreamParser parser(stream);
            auto builder = std::make_unique<ChangeSetBuilder>(ChangeSetBuilder::View::kDiff);
            SendCommand cmd;
            while (parser.next(cmd)) {
                if (cmd.cmd == Command::END) {
                    builder->finish();
                    builder = std::make_unique<ChangeSetBuilder>(ChangeSetBuilder::View::kDiff);
                    continue;
                }
                builder->apply(cmd);
            }
            builder->finish();
        } catch (const std::runtime_error& e) { // SendStreamError and ChangeSetError are ones too
            error = e.what();
        }
        if (file.filename().string().find("own-subtree") != std::string::npos ||
            file.filename().string().find("cycle") != std::string::npos)
            CHECK(error.find("its own ancestor") != std::string::npos);
    }
}
