#include "plugin/upkeep/work_queue.h"

#include "snapshots/snapshot_list.h"
#include "snapshots/kernel/error.h"
#include "snapshots/kernel/unique_fd.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <iostream>
#include <memory>
#include <set>

namespace snapdedupe {

namespace {

constexpr const char* kClaimedPrefix = ".claimed-";
constexpr const char* kTempPrefix = ".tmp-";
constexpr const char* kLockName = ".lock";
constexpr time_t kStaleTempSeconds = 24 * 3600; // a plugin killed between write and rename

void note(const std::string& message)
{
    std::cerr << "snapdedupe: queue: " << message << "\n";
}

std::string join(const std::string& dir, const std::string& name)
{
    return dir.ends_with('/') ? dir + name : dir + "/" + name;
}

bool is_dir(const std::string& path)
{
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool on_btrfs(const std::string& path)
{
    struct statfs sfs;
    return ::statfs(path.c_str(), &sfs) == 0 && sfs.f_type == BTRFS_SUPER_MAGIC;
}

// snapper numbers its snapshots from 1; nine digits are far more than it will reach, and
// keep the value well inside uint64_t.
bool is_snapshot_number(std::string_view text)
{
    return !text.empty() && text.size() <= 9 &&
           std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isdigit(c) != 0; });
}

// Reads one entry; nullopt (with the reason) if it cannot be read or is not a well-formed entry.
std::optional<QueueEntry> read_entry(const std::string& file, std::string& why)
{
    UniqueFd fd(::open(file.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) {
        why = std::string("cannot open: ") + std::strerror(errno);
        return std::nullopt;
    }
    // One byte more than an entry may hold, so the parser sees that it is too long.
    std::string text(kMaxQueueEntryBytes + 1, '\0');
    ssize_t n = ::read(fd.get(), text.data(), text.size());
    if (n < 0) {
        why = std::string("cannot read: ") + std::strerror(errno);
        return std::nullopt;
    }
    text.resize(static_cast<size_t>(n));
    return parse_queue_entry(text, file, why);
}

// The plugin's temporary files, left only if it was killed between write and rename.
void remove_if_stale(const std::string& file)
{
    struct stat st;
    if (::lstat(file.c_str(), &st) == 0 && std::time(nullptr) - st.st_mtime > kStaleTempSeconds)
        ::unlink(file.c_str());
}

} // namespace

std::string state_dir()
{
    const char* env = std::getenv(kStateDirEnv);
    return env && *env ? env : "/var/lib/snapdedupe";
}

std::optional<QueueEntry> parse_queue_entry(std::string_view text, const std::string& file, std::string& why)
{
    if (text.size() > kMaxQueueEntryBytes) {
        why = "too long";
        return std::nullopt;
    }
    QueueEntry e;
    e.file = file;
    std::string action, number;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t eol = std::min(text.find('\n', pos), text.size());
        std::string_view line = text.substr(pos, eol - pos);
        pos = eol + 1;
        size_t eq = line.find('=');
        if (eq == std::string_view::npos)
            continue;
        std::string_view key = line.substr(0, eq), value = line.substr(eq + 1);
        if (key == "action")
            action = value;
        else if (key == "subvolume")
            e.subvolume = value;
        else if (key == "number")
            number = value; // other keys are informational (the plugin adds the time queued)
    }
    if (action == "create")
        e.action = QueueEntry::Action::kCreate;
    else if (action == "forget")
        e.action = QueueEntry::Action::kForget;
    else {
        why = "unknown action '" + action + "'";
        return std::nullopt;
    }
    if (!e.subvolume.starts_with('/')) {
        why = "subvolume '" + e.subvolume + "' is not an absolute path";
        return std::nullopt;
    }
    if (!is_snapshot_number(number)) {
        why = "bad snapshot number '" + number + "'";
        return std::nullopt;
    }
    e.number = std::stoull(number);
    return e;
}

std::string QueueEntry::snapshots_dir() const
{
    return join(subvolume, ".snapshots");
}

std::string QueueEntry::snapshot_path() const
{
    return join(snapshots_dir(), std::to_string(number)) + "/snapshot";
}

WorkQueue::WorkQueue(const std::string& state_dir, bool no_wait) : dir_(join(state_dir, "queue"))
{
    if (is_dir(dir_))
        lock_.emplace(join(dir_, kLockName), no_wait, "another snapdedupe run --queue");
}

std::vector<QueueEntry> WorkQueue::take(bool claim)
{
    std::vector<QueueEntry> entries;
    if (!lock_)
        return entries;
    std::vector<std::string> names;
    {
        std::unique_ptr<DIR, int (*)(DIR*)> dir(::opendir(dir_.c_str()), ::closedir);
        if (!dir)
            throw SysError("listing queue", dir_, errno);
        while (dirent* d = ::readdir(dir.get()))
            names.emplace_back(d->d_name);
    }
    std::sort(names.begin(), names.end());
    std::set<std::string> taken;
    for (const std::string& name : names) {
        if (name == "." || name == ".." || name == kLockName)
            continue;
        if (name.starts_with(kTempPrefix)) {
            remove_if_stale(join(dir_, name));
            continue;
        }
        std::string claimed = name.starts_with(kClaimedPrefix) ? name : kClaimedPrefix + name;
        if (name.starts_with('.') && !name.starts_with(kClaimedPrefix))
            continue;
        std::string file = join(dir_, name);
        if (claim && name != claimed) {
            if (::rename(file.c_str(), join(dir_, claimed).c_str()) != 0)
                throw SysError("claiming queue entry", file, errno);
            file = join(dir_, claimed);
        }
        if (!taken.insert(claimed).second)
            continue; // a new entry renamed over one a failed run had claimed: the same work
        std::string why;
        std::optional<QueueEntry> e = read_entry(file, why);
        if (!e) {
            note("dropping " + file + ": " + why);
            if (claim)
                ::unlink(file.c_str());
            continue;
        }
        if (claim)
            claimed_.push_back(file);
        entries.push_back(std::move(*e));
    }
    return entries;
}

void WorkQueue::finish()
{
    for (const std::string& file : claimed_)
        if (::unlink(file.c_str()) != 0 && errno != ENOENT)
            throw SysError("removing queue entry", file, errno);
    claimed_.clear();
}

QueuedWork plan_queued_work(const std::vector<QueueEntry>& entries)
{
    QueuedWork work;
    std::set<std::string> dirs, forget;
    for (const QueueEntry& e : entries) {
        if (e.action == QueueEntry::Action::kForget) {
            if (!on_btrfs(e.subvolume))
                note("nothing to forget for " + e.file + ": " + e.subvolume + " is not on btrfs (unmounted?)");
            else if (forget.insert(e.subvolume).second)
                work.forget_on.push_back(e.subvolume);
            continue;
        }
        if (!is_dir(e.snapshot_path()) || !on_btrfs(e.snapshot_path())) {
            note("nothing to do for " + e.file + ": " + e.snapshot_path() + " is gone");
            continue;
        }
        if (dirs.count(e.snapshots_dir()))
            continue;
        // A read-write snapper snapshot is queued like any other, but is not ours to process;
        // if it is the only one, the directory would fail the whole run.
        try {
            find_snapshots(open_directory(e.snapshots_dir()));
        } catch (const PathError& err) {
            note("nothing to do for " + e.file + ": " + err.what());
            continue;
        }
        dirs.insert(e.snapshots_dir());
        work.snapshot_dirs.push_back(e.snapshots_dir());
    }
    return work;
}

} // namespace snapdedupe
