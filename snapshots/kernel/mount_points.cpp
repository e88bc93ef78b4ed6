#include "snapshots/kernel/mount_points.h"

#include <limits.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <vector>

namespace snapdedupe {

namespace {

// mountinfo writes space, tab, newline and backslash in paths as \ooo.
std::string unescape(const std::string& field)
{
    std::string out;
    for (size_t i = 0; i < field.size(); ++i) {
        if (field[i] == '\\' && i + 3 < field.size()) {
            const std::string digits = field.substr(i + 1, 3);
            if (digits.find_first_not_of("01234567") == std::string::npos) {
                out.push_back(static_cast<char>(std::stoi(digits, nullptr, 8)));
                i += 3;
                continue;
            }
        }
        out.push_back(field[i]);
    }
    return out;
}

std::optional<std::string> path_of(const LabeledFd& dir)
{
    std::vector<char> buf(PATH_MAX + 1);
    const std::string link = "/proc/self/fd/" + std::to_string(dir.get());
    ssize_t n = ::readlink(link.c_str(), buf.data(), buf.size());
    if (n <= 0 || static_cast<size_t>(n) >= buf.size() || buf[0] != '/')
        return std::nullopt;
    return std::string(buf.data(), static_cast<size_t>(n));
}

} // namespace

std::optional<std::set<std::string>> names_with_mounts(const LabeledFd& dir)
{
    std::optional<std::string> path = path_of(dir);
    std::ifstream mountinfo("/proc/self/mountinfo");
    if (!path || !mountinfo)
        return std::nullopt;
    const std::string prefix = *path == "/" ? "/" : *path + "/";
    std::set<std::string> names;
    for (std::string line; std::getline(mountinfo, line);) {
        // mount id, parent id, major:minor, root, mount point, ...
        std::istringstream fields(line);
        std::string skip, mount_point;
        if (!(fields >> skip >> skip >> skip >> skip >> mount_point))
            return std::nullopt;
        mount_point = unescape(mount_point);
        if (mount_point.size() > prefix.size() && mount_point.compare(0, prefix.size(), prefix) == 0)
            names.insert(mount_point.substr(prefix.size(), mount_point.find('/', prefix.size()) - prefix.size()));
    }
    return names;
}

} // namespace snapdedupe
