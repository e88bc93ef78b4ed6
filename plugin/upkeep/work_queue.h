// The queue the snapper plugin fills (packaging/snapper-plugin) and `run --queue` drains.
//
// snapper calls its plugins synchronously and forbids them to call snapper, so the plugin
// only records what happened, one file per snapshot in <state>/queue/:
//     action=create|forget
//     subvolume=/home
//     number=42
// named after action, subvolume and number, so snapper's two names for one event
// (create-snapshot and create-snapshot-post) make one entry. Entries are written to a
// temporary name (".tmp-*") and renamed, so a reader never sees half of one.
#pragma once

#include "plugin/upkeep/maintenance_lock.h"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace snapdedupe {

inline constexpr const char* kStateDirEnv = "SNAPDEDUPE_STATE_DIR";

// $SNAPDEDUPE_STATE_DIR if set (tests), else /var/lib/snapdedupe.
std::string state_dir();

struct QueueEntry {
    enum class Action { kCreate, kForget };
    Action action = Action::kCreate;
    std::string subvolume; // snapper's config SUBVOLUME, absolute
    uint64_t number = 0;
    std::string file;      // where the entry is stored

    // snapper's layout: <subvolume>/.snapshots/<number>/snapshot ("/" gives /.snapshots/...).
    std::string snapshots_dir() const;
    std::string snapshot_path() const;
};

// The most an entry may hold: three short lines. Anything longer is not the plugin's.
inline constexpr size_t kMaxQueueEntryBytes = 8192;

// Parses the text of one entry read from `file` (kept in the entry, for notes). nullopt, with
// the reason in `why`, if it is not well-formed: longer than kMaxQueueEntryBytes, an action
// other than create or forget, a subvolume that is not absolute, a number that is missing or
// not 1 to 9 decimal digits. Lines without '=' and other keys are ignored (the plugin adds
// the time queued); a repeated key counts its last value.
std::optional<QueueEntry> parse_queue_entry(std::string_view text, const std::string& file, std::string& why);

// What the queued entries ask of a run.
struct QueuedWork {
    std::vector<std::string> snapshot_dirs; // .snapshots directories with a new snapshot
    std::vector<std::string> forget_on;     // subvolumes whose filesystem lost a snapshot
};

class WorkQueue {
public:
    // Locks the queue (a second drainer waits, or with `no_wait` throws BusyError). A missing
    // queue directory is an empty queue.
    WorkQueue(const std::string& state_dir, bool no_wait);

    // Every entry, including those a failed run claimed before. With `claim`, each is first
    // renamed to ".claimed-NAME": the plugin can queue the same name again meanwhile, and
    // that new entry is kept for the next run. Unreadable entries are dropped with a note.
    std::vector<QueueEntry> take(bool claim);
    // The run succeeded: deletes the claimed entries.
    void finish();

private:
    std::string dir_;
    std::optional<FileLock> lock_;
    std::vector<std::string> claimed_;
};

// Turns entries into work, dropping (with a note on stderr) those with nothing left to do: a
// snapshot deleted before it was processed, a subvolume no longer on btrfs. The forgetting
// itself is done by every run (plugin/snapshot_forgetter.h); a forget entry makes sure its
// filesystem is visited.
QueuedWork plan_queued_work(const std::vector<QueueEntry>& entries);

} // namespace snapdedupe
