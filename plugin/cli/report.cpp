// The run's report, for the admin (print_human) and for scripts (print_json). The dedupe
// counters come from their one list (plugin/dedupe/dedupe_counters.h): the JSON prints every
// one of them by iterating it, the human report picks its lines from it by member.
#include "plugin/cli/human_bytes.h"
#include "plugin/cli/json_quote.h"
#include "plugin/dedupe/deduper.h"
#include "plugin/run_report.h"

#include <ostream>
#include <string>

namespace snapdedupe {

namespace {

// Where the figures start in the human report's summary lines.
constexpr size_t kLabelWidth = 23;

// A line of the human report that prints one counter, only when it is not zero: what was
// skipped or went wrong is worth a line, its absence is not.
struct CounterNote {
    const char* label;
    uint64_t DedupeCounters::*counter;
    bool in_bytes; // else a count
    const char* what;
};

static_assert(kMaxTargetsPerCall == 120, "the fan-out note below names the per-call limit");
constexpr CounterNote kCounterNotes[] = {
    {"skipped (writable):", &DedupeCounters::skipped_writable_bytes, true,
     "referenced by a writable subvolume (--readonly-only)"},
    {"skipped (partial):", &DedupeCounters::skipped_partial_bytes, true,
     "in extents that also hold unique data: sharing them frees nothing"},
    {"skipped (cost):", &DedupeCounters::skipped_cost_bytes, true,
     "whose moves would cost more metadata than they free"},
    {"large fan-out:", &DedupeCounters::large_fanout_extents, false, "extents with more than 120 references"},
    {"changed meanwhile:", &DedupeCounters::differs_bytes, true, "(kernel compare differed)"},
};

int64_t diff(uint64_t before, uint64_t after)
{
    return static_cast<int64_t>(before) - static_cast<int64_t>(after);
}

// The label padded so that every figure starts in the same column.
std::string label(const std::string& text)
{
    return text.size() >= kLabelWidth ? text + " " : text + std::string(kLabelWidth - text.size(), ' ');
}

void print_snapshot_human(std::ostream& out, const SnapshotReport& s)
{
    out << "snapshot " << s.path << (s.parent_path.empty() ? " (full)" : " (since " + s.parent_path + ")")
        << ": changed " << human_bytes(s.bytes_changed) << ", fingerprinted " << human_bytes(s.fingerprinted.total())
        << " (read " << human_bytes(s.fingerprinted.read) << ")"
        << ", duplicate " << human_bytes(s.dedupe.duplicate_bytes) << ", deduped "
        << human_bytes(s.dedupe.deduped_bytes) << "\n";
    for (const PlannedExtent& e : s.plan)
        out << "  would free extent " << e.disk_bytenr << " (" << human_bytes(e.disk_bytes) << "): move "
            << e.references << " reference" << (e.references == 1 ? "" : "s")
            << (e.writable ? " (one in a writable subvolume)" : "") << ", metadata ~"
            << human_bytes(e.metadata_cost) << "\n";
}

void print_counters_human(std::ostream& out, const DedupeCounters& c, bool dry_run)
{
    out << label("duplicate found:") << human_bytes(c.duplicate_bytes) << "\n";
    if (!dry_run)
        out << label("deduped:") << human_bytes(c.deduped_bytes) << " (" << c.references_moved
            << " references moved)\n";
    out << label("extents to free:") << c.extents_planned << " planned"
        << (dry_run ? "" : ", " + std::to_string(c.extents_moved) + " freed") << "; predicted "
        << human_bytes(c.predicted_freed_bytes) << " data for ~" << human_bytes(c.predicted_metadata_bytes)
        << " metadata\n";
    for (const CounterNote& note : kCounterNotes) {
        uint64_t value = c.*note.counter;
        if (value)
            out << label(note.label) << (note.in_bytes ? human_bytes(value) : std::to_string(value)) << " "
                << note.what << "\n";
    }
    if (c.dedupe_errors || c.busy_deferred)
        out << label("not deduped:") << c.dedupe_errors << " ranges with errors, " << c.busy_deferred
            << " busy (send running), left for the next run\n";
    if (c.dedupe_refused)
        out << label("refused:") << c.dedupe_refused
            << " ranges the kernel refuses for good (a nodatasum and a checksummed file, an immutable file)\n";
}

void print_space_human(std::ostream& out, const SpaceUsage& before, const SpaceUsage& after)
{
    out << label("data used:") << human_bytes(before.data_used) << " -> " << human_bytes(after.data_used)
        << " (freed " << human_bytes(diff(before.data_used, after.data_used)) << ")\n";
    out << label("metadata used:") << human_bytes(before.metadata_used) << " -> "
        << human_bytes(after.metadata_used) << " (grew "
        << human_bytes(-diff(before.metadata_used, after.metadata_used)) << ")\n";
    out << label("net freed on disk:") << human_bytes(diff(before.raw_used, after.raw_used))
        << " (all copies of data and metadata)\n";
}

// The counters as members of an enclosing object, each under its own name.
void print_counters_json(std::ostream& out, const DedupeCounters& c)
{
    const char* separator = "";
    for (const DedupeCounterField& field : kDedupeCounterFields) {
        out << separator << json_quote(field.name) << ": " << c.*field.member;
        separator = ", ";
    }
}

void print_space_json(std::ostream& out, const SpaceUsage& before, const SpaceUsage& after)
{
    out << "{\"before\": {\"data_used\": " << before.data_used << ", \"metadata_used\": " << before.metadata_used
        << ", \"raw_used\": " << before.raw_used << "}, \"after\": {\"data_used\": " << after.data_used
        << ", \"metadata_used\": " << after.metadata_used << ", \"raw_used\": " << after.raw_used
        << "}, \"data_freed\": " << diff(before.data_used, after.data_used)
        << ", \"metadata_growth\": " << -diff(before.metadata_used, after.metadata_used)
        << ", \"net_freed\": " << diff(before.raw_used, after.raw_used) << "}";
}

// bytes_hashed is the sum of the other two: the name predates fingerprints.
void print_fingerprinted_json(std::ostream& out, const FingerprintCounts& f)
{
    out << "\"bytes_hashed\": " << f.total() << ", \"bytes_fingerprinted_from_csums\": " << f.from_csums
        << ", \"bytes_read_for_fingerprints\": " << f.read << ", ";
}

void print_snapshot_json(std::ostream& out, const SnapshotReport& s)
{
    out << "{" << json_bytes_member("path", s.path) << ", "
        << (s.parent_path.empty() ? "\"parent\": null" : json_bytes_member("parent", s.parent_path))
        << ", \"bytes_changed\": " << s.bytes_changed << ", ";
    print_fingerprinted_json(out, s.fingerprinted);
    print_counters_json(out, s.dedupe);
    out << ", \"plan\": [";
    for (size_t e = 0; e < s.plan.size(); ++e) {
        const PlannedExtent& p = s.plan[e];
        out << (e ? ", " : "") << "{\"extent\": " << p.disk_bytenr << ", \"bytes\": " << p.disk_bytes
            << ", \"references\": " << p.references << ", \"metadata_cost\": " << p.metadata_cost
            << ", \"writable\": " << (p.writable ? "true" : "false") << "}";
    }
    out << "]}";
}

} // namespace

void RunReport::add(const SnapshotReport& s)
{
    snapshots.push_back(s);
    bytes_changed += s.bytes_changed;
    fingerprinted.from_csums += s.fingerprinted.from_csums;
    fingerprinted.read += s.fingerprinted.read;
    dedupe.add(s.dedupe);
}

void print_human(std::ostream& out, const RunReport& r)
{
    for (const SnapshotReport& s : r.snapshots)
        print_snapshot_human(out, s);
    out << (r.dry_run ? "dry run: nothing was changed\n" : "");
    out << label("snapshots processed:") << r.snapshots.size() << "\n";
    out << label("changed (send):") << human_bytes(r.bytes_changed) << "\n";
    out << label("fingerprinted:") << human_bytes(r.fingerprinted.total()) << "\n";
    out << label("  from checksums:") << human_bytes(r.fingerprinted.from_csums) << " (nothing read)\n";
    out << label("  read:") << human_bytes(r.fingerprinted.read) << " (compressed, nodatasum)\n";
    print_counters_human(out, r.dedupe, r.dry_run);
    print_space_human(out, r.before, r.after);
}

void print_json(std::ostream& out, const RunReport& r)
{
    out << "{\"dry_run\": " << (r.dry_run ? "true" : "false") << ", "
        << json_bytes_list_member("filesystems", r.filesystems) << ", \"snapshots_processed\": " << r.snapshots.size()
        << ", \"bytes_changed\": " << r.bytes_changed << ", ";
    print_fingerprinted_json(out, r.fingerprinted);
    print_counters_json(out, r.dedupe);
    out << ", \"space\": ";
    print_space_json(out, r.before, r.after);
    out << ", \"seconds\": " << r.seconds << ", \"snapshots\": [";
    for (size_t i = 0; i < r.snapshots.size(); ++i) {
        out << (i ? ", " : "");
        print_snapshot_json(out, r.snapshots[i]);
    }
    out << "]}\n";
}

} // namespace snapdedupe
