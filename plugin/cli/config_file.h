// /etc/snapdedupe.conf: what the nightly run processes, and its policies.
//
//     # the paths `run` processes when none is given on the command line (repeatable)
//     path = /.snapshots
//     path = /home/.snapshots
//     db = /var/lib/snapdedupe/custom.sqlite
//     readonly-only = false
//
// Read with Boost.Program_options' config-file parser. The command line overrides it: PATH
// arguments replace every `path`, --db replaces `db`, --readonly-only sets it. `dry-run` is
// refused: a config that silently turns every run into a dry run would look like a bug.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace snapdedupe {

inline constexpr const char* kDefaultConfigPath = "/etc/snapdedupe.conf";

struct ConfigFile {
    std::vector<std::string> paths;
    std::optional<std::string> db;
    std::optional<bool> readonly_only;
};

// Reads `path`. A missing file is an empty config unless `must_exist` (it was named with
// --config). Throws UsageError (exit code 2) naming the file for anything it cannot use.
ConfigFile read_config(const std::string& path, bool must_exist);

} // namespace snapdedupe
