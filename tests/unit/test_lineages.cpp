// Grouping snapshots into lineages (snapshots/snapshot_list.h, group_lineages). Snapshots are
// built here with only their identity (uuid, parent_uuid, otransid, path) and moved in.
#include "snapshots/snapshot_list.h"

#include <doctest/doctest.h>

#include <algorithm>

using namespace snapdedupe;

namespace {

Uuid uuid_of(uint8_t id)
{
    Uuid u{};
    u[0] = 0x5d;
    u[15] = id;
    return u;
}

// `parent` 0: no parent_uuid (a subvolume created empty, or a full receive).
Snapshot snapshot(const std::string& path, uint8_t id, uint8_t parent, uint64_t otransid)
{
    Snapshot s;
    s.path = path;
    s.uuid = uuid_of(id);
    s.parent_uuid = parent ? uuid_of(parent) : Uuid{};
    s.otransid = otransid;
    return s;
}

std::vector<std::string> paths_of(const Lineage& l)
{
    std::vector<std::string> paths;
    for (const Snapshot& s : l.snapshots)
        paths.push_back(s.path);
    return paths;
}

// The lineage whose origin is `id`; fails the test if there is none.
const Lineage& lineage_of(const std::vector<Lineage>& lineages, uint8_t id)
{
    auto it = std::find_if(lineages.begin(), lineages.end(),
                           [&](const Lineage& l) { return l.key == uuid_to_string(uuid_of(id)); });
    REQUIRE(it != lineages.end());
    return *it;
}

using Paths = std::vector<std::string>;

} // namespace

TEST_CASE("lineages: snapper's snapshots of one subvolume, oldest first by otransid")
{
    // The live subvolume (uuid 1) is not among the snapshots: it is the lineage's origin.
    std::vector<Snapshot> found;
    found.push_back(snapshot("/.snapshots/3/snapshot", 13, 1, 300));
    found.push_back(snapshot("/.snapshots/10/snapshot", 20, 1, 150)); // taken second
    found.push_back(snapshot("/.snapshots/1/snapshot", 11, 1, 100));
    std::vector<Lineage> lineages = group_lineages(std::move(found));
    REQUIRE(lineages.size() == 1);
    CHECK(lineages[0].key == uuid_to_string(uuid_of(1)));
    CHECK(paths_of(lineages[0]) ==
          Paths{"/.snapshots/1/snapshot", "/.snapshots/10/snapshot", "/.snapshots/3/snapshot"});
}

TEST_CASE("lineages: a received chain links through parent_uuid to its first snapshot")
{
    std::vector<Snapshot> found;
    found.push_back(snapshot("/backup/home.20240103", 33, 32, 30));
    found.push_back(snapshot("/backup/home.20240101", 31, 0, 10)); // the full receive
    found.push_back(snapshot("/backup/home.20240102", 32, 31, 20));
    std::vector<Lineage> lineages = group_lineages(std::move(found));
    REQUIRE(lineages.size() == 1);
    CHECK(lineages[0].key == uuid_to_string(uuid_of(31)));
    CHECK(paths_of(lineages[0]) == Paths{"/backup/home.20240101", "/backup/home.20240102", "/backup/home.20240103"});
}

TEST_CASE("lineages: a received chain whose first snapshot was deleted keeps its origin's uuid")
{
    std::vector<Snapshot> found;
    found.push_back(snapshot("/backup/home.20240103", 33, 32, 30));
    found.push_back(snapshot("/backup/home.20240102", 32, 31, 20)); // 31 is gone
    std::vector<Lineage> lineages = group_lineages(std::move(found));
    REQUIRE(lineages.size() == 1);
    CHECK(lineages[0].key == uuid_to_string(uuid_of(31)));
    CHECK(paths_of(lineages[0]) == Paths{"/backup/home.20240102", "/backup/home.20240103"});
}

TEST_CASE("lineages: two subvolumes' snapshots make two lineages, each in its own order")
{
    std::vector<Snapshot> found;
    found.push_back(snapshot("/home/.snapshots/2/snapshot", 42, 2, 250));
    found.push_back(snapshot("/.snapshots/2/snapshot", 12, 1, 200));
    found.push_back(snapshot("/home/.snapshots/1/snapshot", 41, 2, 50));
    found.push_back(snapshot("/.snapshots/1/snapshot", 11, 1, 100));
    std::vector<Lineage> lineages = group_lineages(std::move(found));
    REQUIRE(lineages.size() == 2);
    CHECK(paths_of(lineage_of(lineages, 1)) == Paths{"/.snapshots/1/snapshot", "/.snapshots/2/snapshot"});
    CHECK(paths_of(lineage_of(lineages, 2)) == Paths{"/home/.snapshots/1/snapshot", "/home/.snapshots/2/snapshot"});
}

TEST_CASE("lineages: a snapshot with no parent and no descendants is a lineage of its own")
{
    std::vector<Snapshot> found;
    found.push_back(snapshot("/snaps/a", 7, 0, 5));
    found.push_back(snapshot("/snaps/b", 8, 0, 6));
    std::vector<Lineage> lineages = group_lineages(std::move(found));
    REQUIRE(lineages.size() == 2);
    CHECK(paths_of(lineage_of(lineages, 7)) == Paths{"/snaps/a"});
    CHECK(paths_of(lineage_of(lineages, 8)) == Paths{"/snaps/b"});
}

TEST_CASE("lineages: nothing in, nothing out; a parent_uuid cycle ends")
{
    CHECK(group_lineages({}).empty());

    // Not something btrfs makes, but the walk must not loop on it.
    std::vector<Snapshot> found;
    found.push_back(snapshot("/snaps/a", 5, 6, 1));
    found.push_back(snapshot("/snaps/b", 6, 5, 2));
    std::vector<Lineage> lineages = group_lineages(std::move(found));
    size_t total = 0;
    for (const Lineage& l : lineages)
        total += l.snapshots.size();
    CHECK(total == 2);
}

TEST_CASE("lineages: snapshots taken here come before received ones, whatever their uuids")
{
    // The received chain's origin (its first snapshot, uuid 30) sorts before the live
    // subvolume's (uuid 90), so by uuid alone it would go first, and its copies would become
    // the keepers.
    std::vector<Snapshot> found;
    Snapshot received_first = snapshot("/backup/live.1", 30, 0, 10);
    received_first.received_uuid = uuid_of(70);
    found.push_back(std::move(received_first));
    Snapshot received_next = snapshot("/backup/live.2", 31, 30, 20);
    received_next.received_uuid = uuid_of(71);
    found.push_back(std::move(received_next));
    found.push_back(snapshot("/snapshots/live.1", 91, 90, 5));
    found.push_back(snapshot("/snapshots/live.2", 92, 90, 15));
    std::vector<Lineage> lineages = group_lineages(std::move(found));
    REQUIRE(lineages.size() == 2);
    CHECK(paths_of(lineages[0]) == Paths{"/snapshots/live.1", "/snapshots/live.2"});
    CHECK(paths_of(lineages[1]) == Paths{"/backup/live.1", "/backup/live.2"});
}
