// The run's report: counters from their one list (plugin/dedupe/dedupe_counters.h), the human
// text the README shows, and JSON that parses whatever bytes the paths hold.
#include "plugin/run_report.h"

#include "strict_json.h"

#include <doctest/doctest.h>

#include <sstream>

using namespace snapdedupe;
using strict_json::Value;

namespace {

// Two snapshots, one with a plan; every counter of the second set and distinct.
RunReport sample_report(bool dry_run)
{
    RunReport r;
    r.dry_run = dry_run;
    r.filesystems = {"0f1e2d3c-0000-4000-8000-000000000001"};
    SnapshotReport a;
    a.path = "/mnt/snaps/1/snapshot";
    a.bytes_changed = 5ull << 30;
    a.fingerprinted.from_csums = 3ull << 30;
    a.dedupe.duplicate_bytes = 1000;
    a.dedupe.deduped_bytes = 900;
    SnapshotReport b;
    b.path = "/mnt/snaps/2/snapshot";
    b.parent_path = "/mnt/snaps/1/snapshot";
    b.bytes_changed = 123456789;
    b.fingerprinted = {11345678, 1000000}; // 12,345,678 fingerprinted
    b.plan.push_back({4096 * 1000, 131072, 3, 16384, true});
    b.plan.push_back({4096 * 2000, 4096, 1, 0, false});
    DedupeCounters& c = b.dedupe;
    c.duplicate_bytes = 1038876672;
    c.deduped_bytes = 1033928704;
    c.differs_bytes = 3;
    c.skipped_writable_bytes = 4;
    c.skipped_partial_bytes = 4456448;
    c.skipped_cost_bytes = 471808;
    c.extents_planned = 30420;
    c.extents_moved = 30419;
    c.predicted_freed_bytes = 1105954816;
    c.predicted_metadata_bytes = 123290000;
    c.large_fanout_extents = 11;
    c.references_moved = 102616;
    c.dedupe_errors = 13;
    c.busy_deferred = 14;
    r.add(a);
    r.add(b);
    r.before = {1352663040, 54077440, 1460000000};
    r.after = {250871808, 81316249, 412000000};
    r.seconds = 2.5;
    return r;
}

std::string human(const RunReport& r)
{
    std::ostringstream out;
    print_human(out, r);
    return out.str();
}

std::string json(const RunReport& r)
{
    std::ostringstream out;
    print_json(out, r);
    return out.str();
}

uint64_t as_number(const Value* v)
{
    REQUIRE(v);
    REQUIRE(v->kind == Value::Kind::kNumber);
    return std::stoull(v->text);
}

// Printed by the code before the counters became one list: the report must not change
// (but for the fingerprint lines, which came with fingerprints).
constexpr const char* kHumanBefore =
    "snapshot /mnt/snaps/1/snapshot (full): changed 5.00 GiB, fingerprinted 3.00 GiB (read 0 B), duplicate 1000 B, deduped 900 B\n"
    "snapshot /mnt/snaps/2/snapshot (since /mnt/snaps/1/snapshot): changed 117.74 MiB, fingerprinted 11.77 MiB "
    "(read 976.56 KiB), "
    "duplicate 990.75 MiB, deduped 986.03 MiB\n"
    "  would free extent 4096000 (128.00 KiB): move 3 references (one in a writable subvolume), metadata ~16.00 KiB\n"
    "  would free extent 8192000 (4.00 KiB): move 1 reference, metadata ~0 B\n"
    "%DRY%"
    "snapshots processed:   2\n"
    "changed (send):        5.11 GiB\n"
    "fingerprinted:         3.01 GiB\n"
    "  from checksums:      3.01 GiB (nothing read)\n"
    "  read:                976.56 KiB (compressed, nodatasum)\n"
    "duplicate found:       990.75 MiB\n"
    "%DEDUPED%"
    "extents to free:       30420 planned%FREED%; predicted 1.03 GiB data for ~117.58 MiB metadata\n"
    "skipped (writable):    4 B referenced by a writable subvolume (--readonly-only)\n"
    "skipped (partial):     4.25 MiB in extents that also hold unique data: sharing them frees nothing\n"
    "skipped (cost):        460.75 KiB whose moves would cost more metadata than they free\n"
    "large fan-out:         11 extents with more than 120 references\n"
    "changed meanwhile:     3 B (kernel compare differed)\n"
    "not deduped:           13 ranges with errors, 14 busy (send running), left for the next run\n"
    "data used:             1.26 GiB -> 239.25 MiB (freed 1.03 GiB)\n"
    "metadata used:         51.57 MiB -> 77.55 MiB (grew 25.98 MiB)\n"
    "net freed on disk:     999.45 MiB (all copies of data and metadata)\n";

std::string replace(std::string s, const std::string& from, const std::string& to)
{
    size_t at = s.find(from);
    REQUIRE(at != std::string::npos);
    return s.replace(at, from.size(), to);
}

std::string human_before(bool dry_run)
{
    std::string s = kHumanBefore;
    s = replace(s, "%DRY%", dry_run ? "dry run: nothing was changed\n" : "");
    s = replace(s, "%DEDUPED%", dry_run ? "" : "deduped:               986.03 MiB (102616 references moved)\n");
    return replace(s, "%FREED%", dry_run ? "" : ", 30419 freed");
}

// Printed by the code before the counters became one list, for sample_report(false).
constexpr const char* kJsonBefore =
    R"({"dry_run": false, "filesystems": ["0f1e2d3c-0000-4000-8000-000000000001"], )"
    R"("snapshots_processed": 2, "bytes_changed": 5492165909, "bytes_hashed": 3233571150, )"
    R"("bytes_fingerprinted_from_csums": 3232571150, "bytes_read_for_fingerprints": 1000000, "compared_bytes": 0, )"
    R"("duplicate_bytes": 1038877672, "deduped_bytes": 1033929604, "differs_bytes": 3, )"
    R"("skipped_writable_bytes": 4, "references_moved": 102616, "dedupe_errors": 13, "dedupe_refused": 0, "busy_deferred": 14, )"
    R"("skipped_partial_bytes": 4456448, "skipped_cost_bytes": 471808, "extents_planned": 30420, )"
    R"("extents_moved": 30419, "predicted_freed_bytes": 1105954816, "predicted_metadata_bytes": 123290000, )"
    R"("large_fanout_extents": 11, "space": {"before": {"data_used": 1352663040, )"
    R"("metadata_used": 54077440, "raw_used": 1460000000}, "after": {"data_used": 250871808, )"
    R"("metadata_used": 81316249, "raw_used": 412000000}, "data_freed": 1101791232, )"
    R"("metadata_growth": 27238809, "net_freed": 1048000000}, "seconds": 2.5, )"
    R"("snapshots": [{"path": "/mnt/snaps/1/snapshot", "parent": null, "bytes_changed": 5368709120, )"
    R"("bytes_hashed": 3221225472, "bytes_fingerprinted_from_csums": 3221225472, )"
    R"("bytes_read_for_fingerprints": 0, "compared_bytes": 0, "duplicate_bytes": 1000, "deduped_bytes": 900, "differs_bytes": 0, )"
    R"("skipped_writable_bytes": 0, "references_moved": 0, "dedupe_errors": 0, "dedupe_refused": 0, "busy_deferred": 0, )"
    R"("skipped_partial_bytes": 0, "skipped_cost_bytes": 0, "extents_planned": 0, "extents_moved": 0, )"
    R"("predicted_freed_bytes": 0, "predicted_metadata_bytes": 0, "large_fanout_extents": 0, "plan": []}, )"
    R"({"path": "/mnt/snaps/2/snapshot", "parent": "/mnt/snaps/1/snapshot", "bytes_changed": 123456789, )"
    R"("bytes_hashed": 12345678, "bytes_fingerprinted_from_csums": 11345678, )"
    R"("bytes_read_for_fingerprints": 1000000, "compared_bytes": 0, "duplicate_bytes": 1038876672, "deduped_bytes": 1033928704, )"
    R"("differs_bytes": 3, "skipped_writable_bytes": 4, "references_moved": 102616, "dedupe_errors": 13, "dedupe_refused": 0, )"
    R"("busy_deferred": 14, "skipped_partial_bytes": 4456448, "skipped_cost_bytes": 471808, )"
    R"("extents_planned": 30420, "extents_moved": 30419, "predicted_freed_bytes": 1105954816, )"
    R"("predicted_metadata_bytes": 123290000, "large_fanout_extents": 11, "plan": [{"extent": 4096000, )"
    R"("bytes": 131072, "references": 3, "metadata_cost": 16384, "writable": true}, {"extent": 8192000, )"
    R"("bytes": 4096, "references": 1, "metadata_cost": 0, "writable": false}]}]})"
    "\n";

} // namespace

TEST_CASE("counters: the table lists every member of the struct, in order")
{
    size_t i = 0;
#define CHECK_FIELD(counter, text)                                     \
    REQUIRE(i < std::size(kDedupeCounterFields));                      \
    CHECK(std::string(kDedupeCounterFields[i].name) == #counter);      \
    CHECK(kDedupeCounterFields[i].member == &DedupeCounters::counter); \
    CHECK(std::string(kDedupeCounterFields[i].meaning) == (text));     \
    ++i;
    SNAPDEDUPE_DEDUPE_COUNTERS(CHECK_FIELD)
#undef CHECK_FIELD
    CHECK(i == std::size(kDedupeCounterFields));
    // Nothing but the listed counters in the struct: a member added by hand would show here.
    CHECK(sizeof(DedupeCounters) == i * sizeof(uint64_t));
}

TEST_CASE("counters: add sums every counter")
{
    DedupeCounters a, b;
    uint64_t next = 1;
#define SET_BOTH(counter, text) \
    a.counter = next;           \
    b.counter = next * 1000;    \
    ++next;
    SNAPDEDUPE_DEDUPE_COUNTERS(SET_BOTH)
#undef SET_BOTH
    a.add(b);
    next = 1;
#define CHECK_SUM(counter, text)     \
    CHECK(a.counter == next * 1001); \
    ++next;
    SNAPDEDUPE_DEDUPE_COUNTERS(CHECK_SUM)
#undef CHECK_SUM
}

TEST_CASE("report JSON: every counter, with its value, at the top and per snapshot")
{
    RunReport r;
    SnapshotReport s;
    s.path = "/s";
    uint64_t next = 7001;
#define SET_DISTINCT(counter, text) \
    r.dedupe.counter = next++;      \
    s.dedupe.counter = next++;
    SNAPDEDUPE_DEDUPE_COUNTERS(SET_DISTINCT)
#undef SET_DISTINCT
    r.snapshots.push_back(s); // not add(): the totals stay distinct from the snapshot's
    std::string text = json(r);
    CAPTURE(text);
    Value top = strict_json::parse(text);
    REQUIRE(top.find("snapshots"));
    REQUIRE(top.find("snapshots")->items.size() == 1);
    const Value& snapshot = top.find("snapshots")->items[0];
#define CHECK_KEY(counter, meaning)                           \
    CHECK(as_number(top.find(#counter)) == r.dedupe.counter); \
    CHECK(as_number(snapshot.find(#counter)) == s.dedupe.counter);
    SNAPDEDUPE_DEDUPE_COUNTERS(CHECK_KEY)
#undef CHECK_KEY
}

// (dedupe_refused and compared_bytes came later: 0 here.)
TEST_CASE("report JSON: the same members and values as before the counters became one list")
{
    Value before = strict_json::parse(kJsonBefore);
    Value now = strict_json::parse(json(sample_report(false)));
    CHECK(strict_json::same(now, before));
    CHECK(json(sample_report(false)).ends_with("}\n"));
}

TEST_CASE("report JSON: paths that are not UTF-8 parse, with their bytes in _bytes_hex")
{
    RunReport r;
    r.filesystems = {"uuid"};
    SnapshotReport s;
    s.path = "/snaps/caf\xe9";      // Latin-1, not UTF-8
    s.parent_path = "/snaps/\xff";
    r.add(s);
    SnapshotReport plain;
    plain.path = "/snaps/caf\xc3\xa9"; // UTF-8: no sibling
    r.add(plain);
    std::string text = json(r);
    CAPTURE(text);
    Value top = strict_json::parse(text);
    const Value& odd = top.find("snapshots")->items.at(0);
    CHECK(odd.find("path")->text == "/snaps/caf\xc3\xa9"); // what a parser makes of \u00e9
    REQUIRE(odd.find("path_bytes_hex"));
    CHECK(odd.find("path_bytes_hex")->text == "2f736e6170732f636166e9");
    REQUIRE(odd.find("parent_bytes_hex"));
    CHECK(odd.find("parent_bytes_hex")->text == "2f736e6170732fff");
    const Value& utf8 = top.find("snapshots")->items.at(1);
    CHECK(utf8.find("path")->text == "/snaps/caf\xc3\xa9");
    CHECK_FALSE(utf8.find("path_bytes_hex"));
    CHECK(utf8.find("parent")->kind == Value::Kind::kNull);
    CHECK_FALSE(top.find("filesystems_bytes_hex"));
}

TEST_CASE("report, human: the text is what it was, for a run and a dry run")
{
    CHECK(human(sample_report(false)) == human_before(false));
    CHECK(human(sample_report(true)) == human_before(true));
}

TEST_CASE("report, human: a run that found nothing prints no notes")
{
    RunReport r;
    CHECK(human(r) == "snapshots processed:   0\n"
                      "changed (send):        0 B\n"
                      "fingerprinted:         0 B\n"
                      "  from checksums:      0 B (nothing read)\n"
                      "  read:                0 B (compressed, nodatasum)\n"
                      "duplicate found:       0 B\n"
                      "deduped:               0 B (0 references moved)\n"
                      "extents to free:       0 planned, 0 freed; predicted 0 B data for ~0 B metadata\n"
                      "data used:             0 B -> 0 B (freed 0 B)\n"
                      "metadata used:         0 B -> 0 B (grew 0 B)\n"
                      "net freed on disk:     0 B (all copies of data and metadata)\n");
}
