#include "plugin/cli/json_quote.h"
#include "plugin/run_report.h"

#include <cstdio>
#include <ostream>
#include <string>

namespace snapdedupe {

namespace {

std::string human_bytes(int64_t n)
{
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = static_cast<double>(n < 0 ? -n : n);
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        ++u;
    }
    char buf[48];
    std::snprintf(buf, sizeof buf, u == 0 ? "%s%.0f %s" : "%s%.2f %s", n < 0 ? "-" : "", v, units[u]);
    return buf;
}

int64_t diff(uint64_t before, uint64_t after)
{
    return static_cast<int64_t>(before) - static_cast<int64_t>(after);
}


void print_counters_json(std::ostream& out, const DedupeCounters& c)
{
    out << "\"duplicate_bytes\": " << c.duplicate_bytes << ", \"deduped_bytes\": " << c.deduped_bytes
        << ", \"differs_bytes\": " << c.differs_bytes << ", \"skipped_writable_bytes\": " << c.skipped_writable_bytes
        << ", \"references_moved\": " << c.references_moved << ", \"dedupe_errors\": " << c.dedupe_errors
        << ", \"busy_deferred\": " << c.busy_deferred << ", \"skipped_partial_bytes\": " << c.skipped_partial_bytes
        << ", \"skipped_cost_bytes\": " << c.skipped_cost_bytes << ", \"extents_planned\": " << c.extents_planned
        << ", \"extents_moved\": " << c.extents_moved << ", \"predicted_freed_bytes\": " << c.predicted_freed_bytes
        << ", \"predicted_metadata_bytes\": " << c.predicted_metadata_bytes
        << ", \"large_fanout_extents\": " << c.large_fanout_extents;
}

} // namespace

void DedupeCounters::add(const DedupeCounters& o)
{
    duplicate_bytes += o.duplicate_bytes;
    deduped_bytes += o.deduped_bytes;
    differs_bytes += o.differs_bytes;
    skipped_writable_bytes += o.skipped_writable_bytes;
    skipped_partial_bytes += o.skipped_partial_bytes;
    skipped_cost_bytes += o.skipped_cost_bytes;
    extents_planned += o.extents_planned;
    extents_moved += o.extents_moved;
    predicted_freed_bytes += o.predicted_freed_bytes;
    predicted_metadata_bytes += o.predicted_metadata_bytes;
    large_fanout_extents += o.large_fanout_extents;
    references_moved += o.references_moved;
    dedupe_errors += o.dedupe_errors;
    busy_deferred += o.busy_deferred;
}

void RunReport::add(const SnapshotReport& s)
{
    snapshots.push_back(s);
    bytes_changed += s.bytes_changed;
    bytes_hashed += s.bytes_hashed;
    dedupe.add(s.dedupe);
}

void print_human(std::ostream& out, const RunReport& r)
{
    for (const SnapshotReport& s : r.snapshots) {
        out << "snapshot " << s.path << (s.parent_path.empty() ? " (full)" : " (since " + s.parent_path + ")")
            << ": changed " << human_bytes(s.bytes_changed) << ", hashed " << human_bytes(s.bytes_hashed)
            << ", duplicate " << human_bytes(s.dedupe.duplicate_bytes) << ", deduped "
            << human_bytes(s.dedupe.deduped_bytes) << "\n";
        for (const PlannedExtentReport& e : s.plan)
            out << "  would free extent " << e.disk_bytenr << " (" << human_bytes(e.disk_bytes) << "): move "
                << e.references << " reference" << (e.references == 1 ? "" : "s")
                << (e.writable ? " (one in a writable subvolume)" : "") << ", metadata ~"
                << human_bytes(e.metadata_cost) << "\n";
    }
    const DedupeCounters& c = r.dedupe;
    out << (r.dry_run ? "dry run: nothing was changed\n" : "");
    out << "snapshots processed:   " << r.snapshots.size() << "\n";
    out << "changed (send):        " << human_bytes(r.bytes_changed) << "\n";
    out << "read and hashed:       " << human_bytes(r.bytes_hashed) << "\n";
    out << "duplicate found:       " << human_bytes(c.duplicate_bytes) << "\n";
    if (!r.dry_run)
        out << "deduped:               " << human_bytes(c.deduped_bytes) << " (" << c.references_moved
            << " references moved)\n";
    out << "extents to free:       " << c.extents_planned << " planned"
        << (r.dry_run ? "" : ", " + std::to_string(c.extents_moved) + " freed") << "; predicted "
        << human_bytes(c.predicted_freed_bytes) << " data for ~" << human_bytes(c.predicted_metadata_bytes)
        << " metadata\n";
    if (c.skipped_writable_bytes)
        out << "skipped (writable):    " << human_bytes(c.skipped_writable_bytes)
            << " referenced by a writable subvolume (--readonly-only)\n";
    if (c.skipped_partial_bytes)
        out << "skipped (partial):     " << human_bytes(c.skipped_partial_bytes)
            << " in extents that also hold unique data: sharing them frees nothing\n";
    if (c.skipped_cost_bytes)
        out << "skipped (cost):        " << human_bytes(c.skipped_cost_bytes)
            << " whose moves would cost more metadata than they free\n";
    if (c.large_fanout_extents)
        out << "large fan-out:         " << c.large_fanout_extents << " extents with more than 120 references\n";
    if (c.differs_bytes)
        out << "changed meanwhile:     " << human_bytes(c.differs_bytes) << " (kernel compare differed)\n";
    if (c.dedupe_errors || c.busy_deferred)
        out << "not deduped:           " << c.dedupe_errors << " ranges with errors, " << c.busy_deferred
            << " busy (send running), left for the next run\n";
    out << "data used:             " << human_bytes(r.before.data_used) << " -> " << human_bytes(r.after.data_used)
        << " (freed " << human_bytes(diff(r.before.data_used, r.after.data_used)) << ")\n";
    out << "metadata used:         " << human_bytes(r.before.metadata_used) << " -> "
        << human_bytes(r.after.metadata_used) << " (grew "
        << human_bytes(-diff(r.before.metadata_used, r.after.metadata_used)) << ")\n";
    out << "net freed on disk:     " << human_bytes(diff(r.before.raw_used, r.after.raw_used))
        << " (all copies of data and metadata)\n";
}

void print_json(std::ostream& out, const RunReport& r)
{
    out << "{\"dry_run\": " << (r.dry_run ? "true" : "false") << ", \"filesystems\": [";
    for (size_t i = 0; i < r.filesystems.size(); ++i)
        out << (i ? ", " : "") << json_quote(r.filesystems[i]);
    out << "], \"snapshots_processed\": " << r.snapshots.size() << ", \"bytes_changed\": " << r.bytes_changed
        << ", \"bytes_hashed\": " << r.bytes_hashed << ", ";
    print_counters_json(out, r.dedupe);
    out << ", \"space\": {\"before\": {\"data_used\": " << r.before.data_used
        << ", \"metadata_used\": " << r.before.metadata_used << ", \"raw_used\": " << r.before.raw_used
        << "}, \"after\": {\"data_used\": " << r.after.data_used << ", \"metadata_used\": " << r.after.metadata_used
        << ", \"raw_used\": " << r.after.raw_used << "}, \"data_freed\": " << diff(r.before.data_used, r.after.data_used)
        << ", \"metadata_growth\": " << -diff(r.before.metadata_used, r.after.metadata_used)
        << ", \"net_freed\": " << diff(r.before.raw_used, r.after.raw_used) << "}, \"seconds\": " << r.seconds
        << ", \"snapshots\": [";
    for (size_t i = 0; i < r.snapshots.size(); ++i) {
        const SnapshotReport& s = r.snapshots[i];
        out << (i ? ", " : "") << "{\"path\": " << json_quote(s.path) << ", \"parent\": "
            << (s.parent_path.empty() ? "null" : json_quote(s.parent_path)) << ", \"bytes_changed\": "
            << s.bytes_changed << ", \"bytes_hashed\": " << s.bytes_hashed << ", ";
        print_counters_json(out, s.dedupe);
        out << ", \"plan\": [";
        for (size_t e = 0; e < s.plan.size(); ++e) {
            const PlannedExtentReport& p = s.plan[e];
            out << (e ? ", " : "") << "{\"extent\": " << p.disk_bytenr << ", \"bytes\": " << p.disk_bytes
                << ", \"references\": " << p.references << ", \"metadata_cost\": " << p.metadata_cost
                << ", \"writable\": " << (p.writable ? "true" : "false") << "}";
        }
        out << "]}";
    }
    out << "]}\n";
}

} // namespace snapdedupe
