// `snapdedupe status` for the admin (print_status_human) and for scripts (print_status_json).
// Paths are bytes: the JSON writes them with json_quote's `_bytes_hex` siblings.
#include "plugin/cli/human_bytes.h"
#include "plugin/cli/json_quote.h"
#include "plugin/run.h"
#include "plugin/status_report.h"

#include <cstdio>
#include <cstring>
#include <ctime>
#include <ostream>
#include <string>

namespace snapdedupe {

namespace {

// Where the figures start, as in the run's report.
constexpr size_t kLabelWidth = 23;
// Unprocessed snapshots listed per lineage in the human text (the JSON lists every one).
constexpr size_t kUnprocessedShown = 10;

std::string label(const std::string& text)
{
    return text.size() >= kLabelWidth ? text + " " : text + std::string(kLabelWidth - text.size(), ' ');
}

std::string indent()
{
    return std::string(kLabelWidth, ' ');
}

std::string local_time(int64_t unix_seconds)
{
    time_t t = static_cast<time_t>(unix_seconds);
    tm local{};
    char buf[32];
    if (!::localtime_r(&t, &local) || std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &local) == 0)
        return std::to_string(unix_seconds);
    return buf;
}

// "EIO", or the number when the C library has no name for it.
std::string errno_name(int err)
{
    const char* name = ::strerrorname_np(err);
    return name ? name : "errno " + std::to_string(err);
}

std::string optional_bytes(const std::optional<int64_t>& n)
{
    return n ? human_bytes(*n) : "-";
}

// "1 run", "2 runs".
std::string count(uint64_t n, const std::string& noun)
{
    return std::to_string(n) + " " + noun + (n == 1 ? "" : "s");
}

void print_lineage_human(std::ostream& out, const LineageStatus& l, bool looked)
{
    out << "  lineage " << l.key << (l.found || !looked ? "" : " (in the index, not under the PATHs)") << "\n";
    out << "  " << label("  processed:");
    if (l.newest_processed)
        out << l.processed << ", the newest " << l.newest_processed->path << " (at "
            << local_time(l.newest_processed->processed_at) << ")\n";
    else
        out << "none yet\n";
    if (!l.found)
        return;
    out << "  " << label("  not processed:") << (l.unprocessed.empty() ? "none\n" : "");
    for (size_t i = 0; i < l.unprocessed.size() && i < kUnprocessedShown; ++i)
        out << (i == 0 ? "" : "  " + indent()) << l.unprocessed[i] << "\n";
    if (l.unprocessed.size() > kUnprocessedShown)
        out << "  " << indent() << "and " << l.unprocessed.size() - kUnprocessedShown
            << " more (--json lists every one)\n";
}

void print_journal_human(std::ostream& out, const JournalSummary& j)
{
    out << "  " << label("journal:");
    if (j.rows == 0) {
        out << "empty\n";
        return;
    }
    uint64_t failed = j.rows - j.not_tried - j.busy;
    out << count(j.rows, "move") << " of " << human_bytes(static_cast<int64_t>(j.bytes)) << " left for the next run: "
        << j.not_tried << " not tried yet, " << j.busy << " busy (a send was running), " << failed << " failed";
    const char* separator = " (";
    for (const auto& [err, count] : j.errors) {
        out << separator << errno_name(err) << " " << count;
        separator = ", ";
    }
    out << (j.errors.empty() ? "" : ")") << "\n";
}

void print_runs_human(std::ostream& out, const std::vector<RunRecord>& runs)
{
    if (runs.empty()) {
        out << "  " << label("last runs:") << "none recorded\n";
        return;
    }
    out << "  last runs:\n";
    char line[200];
    std::snprintf(line, sizeof line, "    %-19s %8s %4s %9s %11s %11s %11s %11s %11s\n", "started", "seconds", "exit",
                  "snapshots", "hashed", "deduped", "data freed", "meta growth", "net freed");
    out << line;
    for (const RunRecord& r : runs) {
        std::snprintf(line, sizeof line, "    %-19s %8.1f %4d %9llu %11s %11s %11s %11s %11s\n",
                      local_time(r.started_at).c_str(), r.seconds, r.exit_code,
                      static_cast<unsigned long long>(r.snapshots),
                      human_bytes(static_cast<int64_t>(r.bytes_hashed)).c_str(),
                      human_bytes(static_cast<int64_t>(r.bytes_deduped)).c_str(), optional_bytes(r.data_freed).c_str(),
                      optional_bytes(r.metadata_growth).c_str(), optional_bytes(r.net_freed).c_str());
        out << line;
    }
}

void print_totals_human(std::ostream& out, const RunTotals& t)
{
    if (t.runs == 0)
        return;
    out << "  " << label("totals:") << count(t.runs, "run") << " since " << local_time(t.since.value_or(0)) << " ("
        << t.failed_runs << " failed): " << count(t.snapshots, "snapshot") << ", hashed "
        << human_bytes(static_cast<int64_t>(t.bytes_hashed)) << ", deduped "
        << human_bytes(static_cast<int64_t>(t.bytes_deduped)) << "\n";
    out << "  " << indent() << "data freed " << human_bytes(t.data_freed) << ", metadata grew "
        << human_bytes(t.metadata_growth) << ", net freed " << human_bytes(t.net_freed) << "\n";
}

void print_filesystem_human(std::ostream& out, const FilesystemStatus& fs)
{
    out << "filesystem " << (fs.uuid.empty() ? "(not recorded in the index)" : fs.uuid) << "\n";
    for (size_t i = 0; i < fs.paths.size(); ++i)
        out << "  " << (i == 0 ? label("paths:") : indent()) << fs.paths[i] << "\n";
    out << "  " << label("index:") << fs.index;
    if (fs.index_bytes)
        out << ", " << human_bytes(static_cast<int64_t>(*fs.index_bytes)) << "\n";
    else
        out << ": no index yet\n";
    for (const LineageStatus& l : fs.lineages)
        print_lineage_human(out, l, !fs.paths.empty());
    if (fs.paths.empty())
        out << "  " << indent() << "(name the snapshot directories to see what is not processed yet)\n";
    print_journal_human(out, fs.journal);
    print_runs_human(out, fs.runs);
    print_totals_human(out, fs.totals);
}

std::string json_optional(const std::optional<int64_t>& n)
{
    return n ? std::to_string(*n) : "null";
}

void print_lineage_json(std::ostream& out, const LineageStatus& l, bool looked)
{
    out << "{\"key\": " << json_quote(l.key) << ", \"found\": " << (l.found ? "true" : "false")
        << ", \"processed\": " << l.processed << ", \"newest_processed\": ";
    if (const auto& s = l.newest_processed)
        out << "{" << json_bytes_member("path", s->path) << ", \"uuid\": " << json_quote(s->uuid)
            << ", \"otransid\": " << s->otransid << ", \"processed_at\": " << s->processed_at << "}";
    else
        out << "null";
    // Not looked for: no PATH on this filesystem, or the lineage lies outside them.
    out << ", " << (looked && l.found ? json_bytes_list_member("unprocessed", l.unprocessed) : "\"unprocessed\": null")
        << "}";
}

void print_journal_json(std::ostream& out, const JournalSummary& j)
{
    out << "{\"rows\": " << j.rows << ", \"bytes\": " << j.bytes << ", \"not_tried\": " << j.not_tried
        << ", \"busy\": " << j.busy << ", \"errors\": {";
    const char* separator = "";
    for (const auto& [err, count] : j.errors) {
        out << separator << json_quote(errno_name(err)) << ": " << count;
        separator = ", ";
    }
    out << "}}";
}

void print_run_json(std::ostream& out, const RunRecord& r)
{
    out << "{\"started_at\": " << r.started_at << ", \"seconds\": " << r.seconds << ", \"exit_code\": " << r.exit_code
        << ", \"snapshots_processed\": " << r.snapshots << ", \"bytes_hashed\": " << r.bytes_hashed
        << ", \"deduped_bytes\": " << r.bytes_deduped << ", \"data_freed\": " << json_optional(r.data_freed)
        << ", \"metadata_growth\": " << json_optional(r.metadata_growth)
        << ", \"net_freed\": " << json_optional(r.net_freed) << "}";
}

void print_totals_json(std::ostream& out, const RunTotals& t)
{
    out << "{\"runs\": " << t.runs << ", \"failed_runs\": " << t.failed_runs << ", \"since\": " << json_optional(t.since)
        << ", \"snapshots_processed\": " << t.snapshots << ", \"bytes_hashed\": " << t.bytes_hashed
        << ", \"deduped_bytes\": " << t.bytes_deduped << ", \"data_freed\": " << t.data_freed
        << ", \"metadata_growth\": " << t.metadata_growth << ", \"net_freed\": " << t.net_freed << "}";
}

void print_filesystem_json(std::ostream& out, const FilesystemStatus& fs)
{
    out << "{\"uuid\": " << (fs.uuid.empty() ? "null" : json_quote(fs.uuid)) << ", "
        << json_bytes_list_member("paths", fs.paths) << ", " << json_bytes_member("index", fs.index)
        << ", \"index_exists\": " << (fs.index_bytes ? "true" : "false")
        << ", \"index_size\": " << (fs.index_bytes ? std::to_string(*fs.index_bytes) : "null") << ", \"lineages\": [";
    for (size_t i = 0; i < fs.lineages.size(); ++i) {
        out << (i ? ", " : "");
        print_lineage_json(out, fs.lineages[i], !fs.paths.empty());
    }
    out << "], \"journal\": ";
    print_journal_json(out, fs.journal);
    out << ", \"runs\": [";
    for (size_t i = 0; i < fs.runs.size(); ++i) {
        out << (i ? ", " : "");
        print_run_json(out, fs.runs[i]);
    }
    out << "], \"totals\": ";
    print_totals_json(out, fs.totals);
    out << "}";
}

} // namespace

void print_status_human(std::ostream& out, const std::vector<FilesystemStatus>& filesystems)
{
    if (filesystems.empty())
        out << "no index yet in " << kDefaultIndexDir << "\n";
    for (size_t i = 0; i < filesystems.size(); ++i) {
        out << (i ? "\n" : "");
        print_filesystem_human(out, filesystems[i]);
    }
}

void print_status_json(std::ostream& out, const std::vector<FilesystemStatus>& filesystems)
{
    out << "{\"filesystems\": [";
    for (size_t i = 0; i < filesystems.size(); ++i) {
        out << (i ? ", " : "");
        print_filesystem_json(out, filesystems[i]);
    }
    out << "]}\n";
}

} // namespace snapdedupe
