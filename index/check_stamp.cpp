#include "index/check_stamp.h"

#include "index/index_file.h"

#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstdio>

namespace snapdedupe {

namespace {

constexpr const char* kAttribute = "user.snapdedupe.checked";

std::optional<CheckStamp> stat_of(const std::string& path)
{
    struct stat st;
    if (::stat(path.c_str(), &st) != 0)
        return std::nullopt;
    CheckStamp s;
    s.dev = st.st_dev;
    s.ino = st.st_ino;
    s.size = static_cast<uint64_t>(st.st_size);
    s.mtime_sec = st.st_mtim.tv_sec;
    s.mtime_nsec = st.st_mtim.tv_nsec;
    return s;
}

bool same_file(const CheckStamp& a, const CheckStamp& b)
{
    return a.dev == b.dev && a.ino == b.ino && a.size == b.size && a.mtime_sec == b.mtime_sec &&
           a.mtime_nsec == b.mtime_nsec;
}

} // namespace

std::optional<CheckStamp> read_check_stamp(const std::string& path)
{
    char text[256];
    ssize_t n = ::getxattr(path.c_str(), kAttribute, text, sizeof text - 1);
    if (n <= 0)
        return std::nullopt;
    text[n] = '\0';
    CheckStamp s;
    unsigned long long dev, ino, size;
    long long sec, nsec, checked;
    int used = 0;
    if (std::sscanf(text, "1 %llu %llu %llu %lld %lld %lld%n", &dev, &ino, &size, &sec, &nsec, &checked, &used) != 6 ||
        text[used] != '\0')
        return std::nullopt;
    s.dev = dev;
    s.ino = ino;
    s.size = size;
    s.mtime_sec = sec;
    s.mtime_nsec = nsec;
    s.checked_at = checked;
    return s;
}

bool full_check_due(const std::string& path, const std::optional<CheckStamp>& stamp, int64_t now)
{
    if (!stamp || has_wal(path))
        return true;
    std::optional<CheckStamp> now_is = stat_of(path);
    if (!now_is || !same_file(*stamp, *now_is))
        return true;
    return now - stamp->checked_at >= kFullCheckEvery || now < stamp->checked_at;
}

bool write_check_stamp(const std::string& path, int64_t checked_at)
{
    std::optional<CheckStamp> s = stat_of(path);
    if (!s)
        return false;
    char text[256];
    int n = std::snprintf(text, sizeof text, "1 %llu %llu %llu %lld %lld %lld", static_cast<unsigned long long>(s->dev),
                          static_cast<unsigned long long>(s->ino), static_cast<unsigned long long>(s->size),
                          static_cast<long long>(s->mtime_sec), static_cast<long long>(s->mtime_nsec),
                          static_cast<long long>(checked_at));
    return ::setxattr(path.c_str(), kAttribute, text, static_cast<size_t>(n), 0) == 0;
}

} // namespace snapdedupe
