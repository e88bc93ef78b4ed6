// The snapdedupe command line: argument parsing, exit codes, and nothing else.
#include "plugin/cli/config_file.h"
#include "plugin/cli/diff_command.h"
#include "plugin/cli/progress_line.h"
#include "plugin/run.h"
#include "plugin/status.h"
#include "plugin/upkeep/work_queue.h"
#include "snapshots/kernel/capabilities.h"
#include "snapshots/kernel/error.h"

#include <boost/program_options.hpp>
#include <linux/capability.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <iostream>
#include <optional>
#include <string>
#include <vector>

namespace po = boost::program_options;

namespace {

using snapdedupe::ExitCode;

const char* const kUsageText = R"(usage: snapdedupe run [--config FILE] [--db FILE] [--dry-run] [--readonly-only] [--queue]
                      [--no-wait] [--json] [PATH...]
       snapdedupe status [--config FILE] [--db FILE] [--json] [PATH...]
       snapdedupe diff [--json] OLD NEW
       snapdedupe --help | --version

run   Dedupe the read-only btrfs snapshots under each PATH that the index has not seen:
      PATH is a read-only snapshot, or a directory of them (snapper's .snapshots, a btrbk
      snapshot or target directory). Only what changed since the previous snapshot of the
      same lineage is read. Without PATH: the `path`s of the config (/etc/snapdedupe.conf).
      --queue also drains what the snapper plugin queued: new snapshots, deleted ones.
      --no-wait: exit 7 if another run or btrfsmaintenance holds a filesystem's lock.
status
      What snapdedupe has done on the filesystem of each PATH (found as run finds them):
      its index and size; per lineage the newest snapshot processed and those not yet; the
      moves deferred in the journal (not tried, busy, failed by errno); the last runs (start,
      duration, exit code, snapshots, hashed, deduped, data freed, metadata growth, net) and
      the totals. Reads the index read-only and changes nothing. Without PATH: the config's
      `path`s, else every index in /var/lib/snapdedupe. Needs root, as run does.
diff  What changed from snapshot OLD to snapshot NEW, from a metadata-only btrfs send.

exit codes: 0 ok, 1 failure during the run (or ranges kept for the next run), 2 usage,
            3 not root or a capability missing, 4 bad path (missing, not btrfs, not a
            read-only snapshot, a read-only mount), 5 index unusable (damaged, not ours,
            another filesystem's), 6 broken send stream, 7 busy (--no-wait)
)";

// What the run and diff need beyond root: a unit's CapabilityBoundingSet or a container can
// take either away.
const snapdedupe::RequiredCapability kSysAdmin{CAP_SYS_ADMIN, "CAP_SYS_ADMIN",
                                               "btrfs send, LOGICAL_INO, tree search and dedupe of read-only snapshots"};
const snapdedupe::RequiredCapability kDacReadSearch{CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH",
                                                    "opening files by handle"};

int fail(ExitCode code, const std::string& message)
{
    std::cerr << "snapdedupe: " << message << "\n";
    return static_cast<int>(code);
}

// Boost's own errors (an unknown option, a missing value) are usage errors like ours.
po::variables_map parse(const std::vector<std::string>& args, const po::options_description& opts,
                        const po::positional_options_description& pos)
{
    po::variables_map vm;
    try {
        po::store(po::command_line_parser(args).options(opts).positional(pos).run(), vm);
        po::notify(vm);
    } catch (const po::error& e) {
        throw snapdedupe::UsageError(e.what());
    }
    return vm;
}

// What a command works on: the PATHs and the index, from the command line over the config
// file, option by option (any PATH replaces every `path`; --db replaces `db`).
struct Sources {
    std::string config_path;
    snapdedupe::ConfigFile config;
    std::vector<std::string> paths;
    std::optional<std::string> db_path;
};

Sources sources_of(const po::variables_map& vm)
{
    Sources s;
    s.config_path = vm.count("config") ? vm["config"].as<std::string>() : snapdedupe::kDefaultConfigPath;
    s.config = snapdedupe::read_config(s.config_path, vm.count("config") > 0);
    s.paths = vm.count("path") ? vm["path"].as<std::vector<std::string>>() : s.config.paths;
    if (vm.count("db"))
        s.db_path = vm["db"].as<std::string>();
    else if (s.config.db)
        s.db_path = *s.config.db;
    if (s.db_path && s.db_path->empty())
        throw snapdedupe::UsageError("--db (or db = in " + s.config_path + ") names no file");
    return s;
}

// Many snapshots reference one extent; their files are open at once while it moves.
void raise_fd_limit()
{
    rlimit lim;
    if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < lim.rlim_max) {
        lim.rlim_cur = lim.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &lim);
    }
}

int run_main(const std::vector<std::string>& args)
{
    po::options_description opts("run options");
    opts.add_options()
        ("config", po::value<std::string>(), "configuration file (default /etc/snapdedupe.conf)")
        ("db", po::value<std::string>(), "index file (default /var/lib/snapdedupe/<fs-uuid>.sqlite)")
        ("dry-run", "report what would be deduped; change nothing")
        ("readonly-only", "leave alone extents that a writable subvolume references")
        ("queue", "also process the snapshots the snapper plugin queued and forget deleted ones")
        ("no-wait", "exit 7 instead of waiting for another run or a btrfsmaintenance task")
        ("json", "print the report as one JSON object")
        ("help,h", "this help")
        ("path", po::value<std::vector<std::string>>(), "snapshot or directory of snapshots");
    // Test seams (plugin/test_seams.h): accepted, never shown in --help.
    po::options_description seams("test seams");
    seams.add_options()
        ("test-pause-before-dedupe", po::value<std::string>(), "FIFO")
        ("test-kill-after-dedupe-calls", po::value<uint64_t>(), "N")
        ("test-no-prefetch", "");
    po::options_description all;
    all.add(opts).add(seams);
    po::positional_options_description pos;
    pos.add("path", -1);
    po::variables_map vm = parse(args, all, pos);
    if (vm.count("help")) {
        std::cout << kUsageText;
        return static_cast<int>(ExitCode::kOk);
    }

    Sources sources = sources_of(vm);
    const snapdedupe::ConfigFile& config = sources.config;
    const std::string& config_path = sources.config_path;
    snapdedupe::RunOptions options;
    options.paths = sources.paths;
    options.db_path = sources.db_path;
    options.dry_run = vm.count("dry-run") > 0;
    options.readonly_only = vm.count("readonly-only") > 0 || config.readonly_only.value_or(false);
    options.no_wait = vm.count("no-wait") > 0;
    if (vm.count("test-pause-before-dedupe"))
        options.seams.pause_fifo = vm["test-pause-before-dedupe"].as<std::string>();
    if (vm.count("test-kill-after-dedupe-calls"))
        options.seams.kill_after_dedupe_calls = vm["test-kill-after-dedupe-calls"].as<uint64_t>();
    options.seams.no_prefetch = vm.count("test-no-prefetch") > 0;
    bool queue = vm.count("queue") > 0;
    if (options.paths.empty() && !queue)
        return fail(ExitCode::kUsage, "run needs at least one PATH, a path in " + config_path + ", or --queue (see --help)");
    if (::geteuid() != 0)
        return fail(ExitCode::kNotRoot, "must run as root: btrfs send, LOGICAL_INO and dedupe of read-only snapshots need CAP_SYS_ADMIN");
    snapdedupe::require_capabilities({kSysAdmin, kDacReadSearch});

    // A dry run reads the queue but leaves it as it is.
    std::optional<snapdedupe::WorkQueue> work_queue;
    if (queue) {
        work_queue.emplace(snapdedupe::state_dir(), options.no_wait);
        snapdedupe::QueuedWork work = snapdedupe::plan_queued_work(work_queue->take(!options.dry_run));
        options.paths.insert(options.paths.end(), work.snapshot_dirs.begin(), work.snapshot_dirs.end());
        options.forget_on = work.forget_on;
    }
    snapdedupe::RunReport report;
    report.dry_run = options.dry_run;
    snapdedupe::ProgressLine progress; // on a terminal only
    if (progress.enabled())
        options.progress = [&progress](const snapdedupe::RunProgress& p) { progress.update(p); };
    if (!options.paths.empty() || !options.forget_on.empty())
        report = snapdedupe::run(options);
    progress.clear();
    if (work_queue && report.failures.empty())
        work_queue->finish(); // only now: a failed run leaves its entries for the next one
    if (vm.count("json"))
        snapdedupe::print_json(std::cout, report);
    else
        snapdedupe::print_human(std::cout, report);
    // Each failure was named on stderr when it happened; the run went on with the rest.
    if (report.dedupe.dedupe_errors > 0)
        std::cerr << "snapdedupe: " << report.dedupe.dedupe_errors
                  << " ranges failed with an error; they are kept and retried by the next run\n";
    bool failed = !report.failures.empty() || report.dedupe.dedupe_errors > 0;
    return static_cast<int>(failed ? ExitCode::kFailure : ExitCode::kOk);
}

int status_main(const std::vector<std::string>& args)
{
    po::options_description opts("status options");
    opts.add_options()
        ("config", po::value<std::string>(), "configuration file (default /etc/snapdedupe.conf)")
        ("db", po::value<std::string>(), "index file (default /var/lib/snapdedupe/<fs-uuid>.sqlite)")
        ("json", "print the status as one JSON object")
        ("help,h", "this help")
        ("path", po::value<std::vector<std::string>>(), "snapshot or directory of snapshots");
    po::positional_options_description pos;
    pos.add("path", -1);
    po::variables_map vm = parse(args, opts, pos);
    if (vm.count("help")) {
        std::cout << kUsageText;
        return static_cast<int>(ExitCode::kOk);
    }

    // The paths and the index as `run` takes them.
    Sources sources = sources_of(vm);
    snapdedupe::StatusOptions options;
    options.paths = sources.paths;
    options.db_path = sources.db_path;
    // The indexes are root's (/var/lib/snapdedupe is 0700), and finding snapshots reads their
    // subvolume info with a tree search.
    if (::geteuid() != 0)
        return fail(ExitCode::kNotRoot, "must run as root: the indexes are root's, and finding snapshots needs CAP_SYS_ADMIN");
    if (!options.paths.empty())
        snapdedupe::require_capabilities({kSysAdmin});
    std::vector<snapdedupe::FilesystemStatus> status = snapdedupe::gather_status(options);
    if (vm.count("json"))
        snapdedupe::print_status_json(std::cout, status);
    else
        snapdedupe::print_status_human(std::cout, status);
    return static_cast<int>(ExitCode::kOk);
}

int diff_main(const std::vector<std::string>& args)
{
    po::options_description opts("diff options");
    opts.add_options()
        ("json", "print the change set as one JSON object")
        ("help,h", "this help")
        ("snapshot", po::value<std::vector<std::string>>(), "OLD and NEW");
    po::positional_options_description pos;
    pos.add("snapshot", 2);
    po::variables_map vm = parse(args, opts, pos);
    if (vm.count("help")) {
        std::cout << kUsageText;
        return static_cast<int>(ExitCode::kOk);
    }
    if (!vm.count("snapshot") || vm["snapshot"].as<std::vector<std::string>>().size() != 2)
        return fail(ExitCode::kUsage, "diff needs two snapshots, OLD and NEW (see --help)");
    if (::geteuid() != 0)
        return fail(ExitCode::kNotRoot, "must run as root: btrfs send needs CAP_SYS_ADMIN");
    snapdedupe::require_capabilities({kSysAdmin});
    const auto& snaps = vm["snapshot"].as<std::vector<std::string>>();
    snapdedupe::diff_command(snaps[0], snaps[1], vm.count("json") > 0, std::cout);
    return static_cast<int>(ExitCode::kOk);
}

} // namespace

int main(int argc, char** argv)
{
    // A consumer that stops reading the send pipe must see EPIPE, not die.
    ::signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();

    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty())
        return fail(ExitCode::kUsage, "no command given (see --help)");
    std::string command = args.front();
    args.erase(args.begin());
    try {
        if (command == "--help" || command == "-h" || command == "help") {
            std::cout << kUsageText;
            return static_cast<int>(ExitCode::kOk);
        }
        if (command == "--version") {
            std::cout << "snapdedupe " SNAPDEDUPE_VERSION "\n";
            return static_cast<int>(ExitCode::kOk);
        }
        if (command == "run")
            return run_main(args);
        if (command == "status")
            return status_main(args);
        if (command == "diff")
            return diff_main(args);
        return fail(ExitCode::kUsage, "unknown command '" + command + "' (see --help)");
    } catch (const std::exception& e) {
        // One type: every error knows its exit code (snapshots/kernel/error.h).
        return fail(snapdedupe::exit_code_of(e), e.what());
    }
}
