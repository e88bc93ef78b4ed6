// `snapdedupe status` below the command line: the history of runs (index/run_history.h) and
// who appends to it (plugin/upkeep/run_recorder.h), the read-only open of the index
// (index/index_file.h), and the status printers (plugin/status_report.h).
#include "temp_dir.h"
#include "index/index_file.h"
#include "index/run_history.h"
#include "plugin/cli/json_quote.h"
#include "plugin/status_report.h"
#include "plugin/upkeep/run_recorder.h"

#include "strict_json.h"

#include <doctest/doctest.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <stdexcept>

using namespace snapdedupe;

using snapdedupe::testing::file_bytes;
using snapdedupe::testing::TempDir;

namespace {



bool has_side_files(const std::string& file)
{
    for (const char* suffix : {"-wal", "-shm", "-journal"})
        if (std::filesystem::exists(file + suffix))
            return true;
    return false;
}

// Reads the history of the index at `path` read-only; false when there is no index yet.
bool read_history(const std::string& path, const std::optional<std::string>& fs_uuid, std::vector<RunRecord>& runs)
{
    return read_index_readonly(path, fs_uuid, [&](Database& db) { runs = recent_runs(db, 10); });
}

SnapshotReport snapshot_report(uint64_t hashed, uint64_t deduped)
{
    SnapshotReport s;
    s.path = "/snaps/x";
    s.fingerprinted.from_csums = hashed;
    s.dedupe.deduped_bytes = deduped;
    return s;
}

} // namespace

TEST_CASE("a new index holds the history; an older one gets it on first write use, not from a dry run")
{
    TempDir dir;
    std::string path = dir.path("index.sqlite");
    {
        std::unique_ptr<Database> db = open_index(path, "fs-a", false);
        CHECK(index_has_table(*db, "runs"));
        db->exec("DROP TABLE runs"); // as an index made before the history was
    }
    {
        std::unique_ptr<Database> db = open_index(path, "fs-a", true);
        CHECK_FALSE(index_has_table(*db, "runs"));
    }
    std::vector<RunRecord> runs{RunRecord{}};
    CHECK(read_history(path, "fs-a", runs)); // no history yet reads as none
    CHECK(runs.empty());
    {
        std::unique_ptr<Database> db = open_index(path, "fs-a", false);
        CHECK(index_has_table(*db, "runs"));
    }
}

TEST_CASE("read_index_readonly: no index yet is no error, and nothing is created or changed")
{
    TempDir dir;
    std::vector<RunRecord> runs;
    std::string missing = dir.path("missing.sqlite");
    CHECK_FALSE(read_history(missing, "fs-a", runs));
    CHECK_FALSE(std::filesystem::exists(missing));
    std::string empty = dir.path("empty.sqlite");
    std::ofstream(empty).close();
    CHECK_FALSE(read_history(empty, "fs-a", runs));
    CHECK(std::filesystem::file_size(empty) == 0);

    std::string path = dir.path("index.sqlite");
    {
        std::unique_ptr<Database> db = open_index(path, "fs-a", false);
        RunRecord r;
        r.started_at = 1700000000;
        r.snapshots = 3;
        append_run(*db, r);
    }
    REQUIRE_FALSE(has_side_files(path)); // the last connection checkpointed and removed them
    std::string before = file_bytes(path);
    CHECK(read_history(path, "fs-a", runs));
    REQUIRE(runs.size() == 1);
    CHECK(runs[0].snapshots == 3);
    CHECK(read_history(path, std::nullopt, runs)); // no filesystem at hand: any uuid
    CHECK_THROWS_AS(read_history(path, "fs-b", runs), IndexError);
    CHECK(file_bytes(path) == before);
    CHECK_FALSE(has_side_files(path));
}

TEST_CASE("read_index_readonly: while a run holds the index, what it committed to its WAL is read")
{
    TempDir dir;
    std::string path = dir.path("index.sqlite");
    std::unique_ptr<Database> run = open_index(path, "fs-a", false);
    RunRecord r;
    r.exit_code = 7;
    append_run(*run, r); // in the -wal only: no checkpoint until the run closes the index
    REQUIRE(std::filesystem::exists(path + "-wal"));
    std::vector<RunRecord> runs;
    CHECK(read_history(path, "fs-a", runs));
    REQUIRE(runs.size() == 1);
    CHECK(runs[0].exit_code == 7);
}

TEST_CASE("read_index_readonly: a run that starts during a read without locks makes it read again, through its WAL")
{
    TempDir dir;
    std::string path = dir.path("index.sqlite");
    open_index(path, "fs-a", false); // made, and closed: no -wal
    std::unique_ptr<Database> run;
    int reads = 0;
    std::vector<RunRecord> runs;
    CHECK(read_index_readonly(path, "fs-a", [&](Database& db) {
        runs = recent_runs(db, 10);
        if (++reads == 1) { // a run starts meanwhile and commits a row to its -wal
            run = open_index(path, "fs-a", false);
            append_run(*run, RunRecord{});
        }
    }));
    CHECK(reads == 2);
    CHECK(runs.size() == 1);
}

TEST_CASE("RunRecorder: one filesystem's share of the report, its exit code, usage not measured as null")
{
    std::unique_ptr<Database> db = open_index(":memory:", "fs-a", false);
    RunReport report;
    report.add(snapshot_report(100, 50)); // an earlier filesystem's
    report.before = {5000, 500, 11000};
    report.after = {4000, 600, 10200};

    RunRecorder second(report);
    report.add(snapshot_report(7, 3));
    report.before.add({1000, 200, 2400});
    report.after.add({900, 220, 2340});
    second.succeeded(*db, report);

    RunRecorder third(report);
    report.failures.push_back("/snaps/y: File name too long");
    third.succeeded(*db, report);

    RunRecorder fourth(report);
    report.before.add({300, 30, 660}); // fails before it measures the usage after
    fourth.failed(*db, report, PathError("/snaps: on a read-only mount"));
    RunRecorder fifth(report);
    fifth.failed(*db, report, std::runtime_error("a library's error"));

    std::vector<RunRecord> runs = recent_runs(*db, 10);
    REQUIRE(runs.size() == 4);
    const RunRecord& share = runs[3];
    CHECK(share.exit_code == 0);
    CHECK(share.snapshots == 1);
    CHECK(share.bytes_hashed == 7);
    CHECK(share.bytes_deduped == 3);
    CHECK(share.data_freed == 100);
    CHECK(share.metadata_growth == 20);
    CHECK(share.net_freed == 60);
    CHECK(share.started_at > 0);
    CHECK(runs[2].exit_code == 1); // a snapshot could not be processed
    CHECK(runs[2].snapshots == 0);
    CHECK(runs[1].exit_code == 4); // the error's own
    CHECK_FALSE(runs[1].data_freed.has_value());
    CHECK_FALSE(runs[1].net_freed.has_value());
    CHECK(runs[0].exit_code == 1);

    RunTotals totals = run_totals(*db);
    CHECK(totals.runs == 4);
    CHECK(totals.failed_runs == 3);
    CHECK(totals.snapshots == 1);
    CHECK(totals.data_freed == 100); // only the runs that measured it

    db->exec("DROP TABLE runs"); // the index itself failing: the run's error is what is reported
    CHECK_NOTHROW(fifth.failed(*db, report, std::runtime_error("disk full")));
}

TEST_CASE("status JSON parses strictly whatever bytes the paths hold")
{
    const std::string odd = "/mnt/snaps/caf\xe9\n.1"; // Latin-1, and a newline
    FilesystemStatus fs;
    fs.uuid = "0f1e2d3c-0000-4000-8000-000000000001";
    fs.paths = {"/mnt/snaps", "/mnt/\xff"};
    fs.index = "/var/lib/snapdedupe/x.sqlite";
    fs.index_bytes = 40960;
    LineageStatus lineage{"1a2b3c4d-0000-4000-8000-000000000002", true, 2, std::nullopt, {odd}};
    lineage.newest_processed = IndexedSnapshot{"u", lineage.key, 42, odd, 1700000000};
    fs.lineages = {lineage, LineageStatus{"k", false, 0, std::nullopt, {}}};
    fs.journal = {6, 393216, 1, 2, {{EIO, 2}, {EPERM, 1}}};
    RunRecord failed;
    failed.exit_code = 4;
    fs.runs = {failed};
    fs.totals.runs = 1;
    fs.totals.since = 1700000000;

    std::ostringstream out;
    print_status_json(out, {fs});
    strict_json::Value doc = strict_json::Reader(out.str()).document();
    const strict_json::Value& f = doc.find("filesystems")->items.at(0);
    CHECK(f.find("paths_bytes_hex")->items.at(1).text == "2f6d6e742fff");
    CHECK(f.find("index_size")->text == "40960");
    const strict_json::Value& l = f.find("lineages")->items.at(0);
    CHECK(l.find("unprocessed_bytes_hex")->items.at(0).text == hex_bytes(odd));
    CHECK(l.find("newest_processed")->find("path_bytes_hex")->text == hex_bytes(odd));
    CHECK(f.find("lineages")->items.at(1).find("unprocessed")->kind == strict_json::Value::Kind::kNull);
    const strict_json::Value* errors = f.find("journal")->find("errors");
    CHECK(errors->find("EIO")->text == "2");
    CHECK(errors->find("EPERM")->text == "1");
    const strict_json::Value& run = f.find("runs")->items.at(0);
    CHECK(run.find("exit_code")->text == "4");
    CHECK(run.find("data_freed")->kind == strict_json::Value::Kind::kNull);

    std::ostringstream human;
    print_status_human(human, {fs});
    CHECK(human.str().find("3 failed (EPERM 1, EIO 2)") != std::string::npos); // by errno
}
