// Files for the tests of what is in the page cache (the page dropper, the read-ahead thread):
// written past the cache, and the cache looked into.
#pragma once

#include "temp_dir.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace snapdedupe::testing {

constexpr size_t kPage = 4096;

// Writes `bytes` (a multiple of kPage) of `fill` with O_DIRECT, so none of it is in the page
// cache. Not written through the cache and dropped: ext4 keeps a page whose buffers its journal
// still holds, so POSIX_FADV_DONTNEED leaves one now and then. Needs a filesystem with a page
// cache of its own (not tmpfs, whose pages are the file itself): the test's temp directory.
inline std::string write_uncached(const TempDir& dir, const std::string& name, size_t bytes, char fill = 'x')
{
    struct statfs fs_info;
    REQUIRE(::statfs(dir.path("").c_str(), &fs_info) == 0);
    REQUIRE_MESSAGE(fs_info.f_type != TMPFS_MAGIC, "the temp directory is on tmpfs: set TMPDIR to a disk's");
    constexpr size_t kChunk = 2 * 1024 * 1024;
    void* chunk = nullptr;
    REQUIRE(::posix_memalign(&chunk, kPage, kChunk) == 0);
    std::memset(chunk, fill, kChunk);
    const std::string path = dir.path(name);
    int out = ::open(path.c_str(), O_CREAT | O_WRONLY | O_DIRECT | O_CLOEXEC, 0600);
    REQUIRE_MESSAGE(out >= 0, "O_DIRECT refused: the temp directory must be on a disk's filesystem");
    for (size_t at = 0; at < bytes; at += kChunk) {
        const size_t n = std::min(kChunk, bytes - at);
        REQUIRE(::pwrite(out, chunk, n, static_cast<off_t>(at)) == static_cast<ssize_t>(n));
    }
    ::close(out);
    std::free(chunk);
    return path;
}

// Pages of [offset, offset + length) of the file in the page cache (both multiples of kPage).
inline size_t cached_pages(int fd, size_t offset, size_t length)
{
    void* map = ::mmap(nullptr, length, PROT_READ, MAP_SHARED, fd, static_cast<off_t>(offset));
    REQUIRE(map != MAP_FAILED);
    std::vector<unsigned char> resident(length / kPage);
    REQUIRE(::mincore(map, length, resident.data()) == 0);
    ::munmap(map, length);
    size_t n = 0;
    for (unsigned char r : resident)
        n += r & 1;
    return n;
}

} // namespace snapdedupe::testing
