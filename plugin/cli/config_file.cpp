#include "plugin/cli/config_file.h"

#include "snapshots/kernel/error.h"
#include "snapshots/kernel/unique_fd.h"

#include <boost/program_options.hpp>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

namespace po = boost::program_options;

namespace snapdedupe {

ConfigFile read_config(const std::string& path, bool must_exist)
{
    ConfigFile config;
    // O_NONBLOCK: opening a FIFO would otherwise wait for a writer, before fstat could refuse
    // it. It changes nothing for the regular file read below.
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
    if (!fd) {
        if (errno == ENOENT && !must_exist)
            return config;
        throw UsageError("config " + path + ": " + std::strerror(errno));
    }
    struct stat st;
    if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode))
        throw UsageError("config " + path + ": not a regular file");
    std::string text;
    char buf[4096];
    for (ssize_t n; (n = ::read(fd.get(), buf, sizeof buf)) != 0;) {
        if (n < 0) {
            if (errno == EINTR)
                continue;
            throw UsageError("config " + path + ": " + std::strerror(errno));
        }
        text.append(buf, static_cast<size_t>(n));
    }
    std::istringstream in(text);

    po::options_description keys("config file");
    keys.add_options()
        ("path", po::value<std::vector<std::string>>(), "a path `run` processes when none is given")
        ("db", po::value<std::string>(), "the index file")
        ("readonly-only", po::value<bool>(), "leave alone extents a writable subvolume references")
        // Declared only to refuse it with a clear message.
        ("dry-run", po::value<std::string>(), "not allowed here");
    po::variables_map vm;
    try {
        po::store(po::parse_config_file(in, keys), vm);
        po::notify(vm);
    } catch (const po::error& e) {
        throw UsageError("config " + path + ": " + e.what());
    }
    if (vm.count("dry-run"))
        throw UsageError("config " + path + ": dry-run is a command-line flag only (--dry-run)");
    if (vm.count("path"))
        config.paths = vm["path"].as<std::vector<std::string>>();
    for (const std::string& p : config.paths)
        if (p.empty())
            throw UsageError("config " + path + ": empty path");
    if (vm.count("db"))
        config.db = vm["db"].as<std::string>();
    if (vm.count("readonly-only"))
        config.readonly_only = vm["readonly-only"].as<bool>();
    return config;
}

} // namespace snapdedupe
