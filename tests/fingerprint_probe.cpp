// Test-only (not installed): prints, as JSON, the fingerprints of the blocks of the files named
// on the command line, from the checksum tree and from their data, and what each way cost.
// tests/integration/test_fingerprints.py reads it.
//
//   fingerprint_probe FILE...
//
// The blocks are cut as a run cuts them (dedupable_blocks: 128 KiB, file-aligned); an
// uncompressed block's disk pieces come from FIEMAP (disk_pieces). First every uncompressed
// block of every file is fingerprinted from the tree in one call, then every block from its
// data, then each block's tree checksums are counted for missing sectors. The costs
// are counted here, not by the library: the link wraps ioctl, read and pread
// (-Wl,--wrap, tests/CMakeLists.txt), so each phase reports the TREE_SEARCH_V2 calls and the
// bytes that this process really made and read.
#include "index/changed_blocks.h"
#include "index/fingerprint.h"
#include "snapshots/kernel/csum_tree.h"
#include "snapshots/kernel/error.h"
#include "snapshots/kernel/fiemap.h"
#include "snapshots/kernel/unique_fd.h"

#include <fcntl.h>
#include <linux/btrfs.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <exception>
#include <numeric>
#include <optional>
#include <string>
#include <vector>

namespace {

struct Counters {
    uint64_t tree_search_calls = 0;
    uint64_t read_calls = 0;
    uint64_t read_bytes = 0;
};
Counters g_counted;

void count_read(ssize_t n)
{
    ++g_counted.read_calls;
    if (n > 0)
        g_counted.read_bytes += static_cast<uint64_t>(n);
}

} // namespace

extern "C" {
int __real_ioctl(int fd, unsigned long request, ...);
ssize_t __real_read(int fd, void* buf, size_t count);
ssize_t __real_pread(int fd, void* buf, size_t count, off_t offset);
ssize_t __real_pread64(int fd, void* buf, size_t count, off_t offset);

int __wrap_ioctl(int fd, unsigned long request, ...)
{
    va_list ap;
    va_start(ap, request);
    void* arg = va_arg(ap, void*);
    va_end(ap);
    if (request == BTRFS_IOC_TREE_SEARCH_V2)
        ++g_counted.tree_search_calls;
    return __real_ioctl(fd, request, arg);
}
ssize_t __wrap_read(int fd, void* buf, size_t count)
{
    ssize_t n = __real_read(fd, buf, count);
    count_read(n);
    return n;
}
ssize_t __wrap_pread(int fd, void* buf, size_t count, off_t offset)
{
    ssize_t n = __real_pread(fd, buf, count, offset);
    count_read(n);
    return n;
}
ssize_t __wrap_pread64(int fd, void* buf, size_t count, off_t offset)
{
    ssize_t n = __real_pread64(fd, buf, count, offset);
    count_read(n);
    return n;
}
}

namespace snapdedupe {
namespace {

struct ProbedFile {
    std::string path;
    LabeledFd fd;
    uint64_t size = 0;
    std::vector<FileExtent> extents; // FIEMAP
    std::vector<DataBlock> blocks;
    std::vector<std::vector<DiskRange>> pieces; // where an uncompressed block lies; empty otherwise
    std::vector<std::optional<Fingerprint>> tree, data;
    std::vector<uint64_t> missing_sectors; // per block; only for uncompressed blocks
};

ProbedFile open_probed(const std::string& path)
{
    ProbedFile f;
    f.path = path;
    int fd = ::open(path.c_str(), O_RDONLY | O_NOATIME | O_CLOEXEC);
    check_sys(fd, "opening", path);
    f.fd = LabeledFd(UniqueFd(fd), path);
    struct stat st;
    check_sys(::fstat(f.fd.get(), &st), "stat", path);
    f.size = static_cast<uint64_t>(st.st_size);
    f.blocks = dedupable_blocks(f.fd, f.size, {ByteRange{0, f.size}});
    f.extents = file_extents(f.fd, 0, f.size);
    for (const DataBlock& b : f.blocks) {
        std::optional<std::vector<DiskRange>> pieces = disk_pieces(f.extents, b.file_offset, b.file_offset + b.length);
        f.pieces.push_back(pieces.value_or(std::vector<DiskRange>{}));
    }
    f.tree.resize(f.blocks.size());
    f.data.resize(f.blocks.size());
    f.missing_sectors.assign(f.blocks.size(), 0);
    return f;
}

// Every uncompressed block of every file, in one call, as a run would ask.
ChecksumSearchStats fingerprint_all_from_tree(const ChecksumInfo& info, std::vector<ProbedFile>& files)
{
    std::vector<TreeBlock> blocks;
    for (const ProbedFile& f : files)
        for (size_t i = 0; i < f.blocks.size(); ++i)
            if (!f.pieces[i].empty())
                blocks.push_back({f.blocks[i].length, f.pieces[i]});
    ChecksumSearchStats stats;
    std::vector<std::optional<Fingerprint>> fps = fingerprints_from_tree(files.front().fd, info, blocks, &stats);
    size_t k = 0;
    for (ProbedFile& f : files)
        for (size_t i = 0; i < f.blocks.size(); ++i)
            if (!f.pieces[i].empty())
                f.tree[i] = fps[k++];
    return stats;
}

// The sectors of each uncompressed block that the tree has no checksum for, asked piece by piece.
void count_missing(const ChecksumInfo& info, ProbedFile& f)
{
    std::vector<DiskRange> ranges;
    std::vector<size_t> which;
    for (size_t i = 0; i < f.blocks.size(); ++i)
        for (const DiskRange& piece : f.pieces[i]) {
            ranges.push_back(piece);
            which.push_back(i);
        }
    // read_range_checksums wants address order.
    std::vector<size_t> order(ranges.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ranges[a].bytenr < ranges[b].bytenr; });
    std::vector<DiskRange> sorted;
    for (size_t k : order)
        sorted.push_back(ranges[k]);
    read_range_checksums(f.fd, info, sorted, [&](size_t k, const RangeChecksums& sums) {
        f.missing_sectors[which[order[k]]] += sums.missing;
    });
}

std::string pieces_json(const std::vector<DiskRange>& pieces)
{
    std::string out = "[";
    for (const DiskRange& p : pieces)
        out += (out.size() > 1 ? ", [" : "[") + std::to_string(p.bytenr) + ", " + std::to_string(p.length) + "]";
    return out + "]";
}

std::string hex(std::optional<Fingerprint> fp)
{
    if (!fp)
        return "null";
    char buf[24];
    std::snprintf(buf, sizeof buf, "\"%016llx\"", static_cast<unsigned long long>(*fp));
    return buf;
}

// Paths are printed as given: the test's are plain ASCII.
void print_file(const ProbedFile& f, bool last)
{
    std::printf("  {\"path\": \"%s\", \"size\": %llu, \"extents\": %zu, \"blocks\": [\n", f.path.c_str(),
                static_cast<unsigned long long>(f.size), f.extents.size());
    for (size_t i = 0; i < f.blocks.size(); ++i) {
        const DataBlock& b = f.blocks[i];
        std::printf("    {\"offset\": %llu, \"length\": %llu, \"compressed\": %s, \"bytenr\": %llu, "
                    "\"pieces\": %s, \"missing_sectors\": %llu, \"tree\": %s, \"data\": %s}%s\n",
                    static_cast<unsigned long long>(b.file_offset), static_cast<unsigned long long>(b.length),
                    b.compressed ? "true" : "false", static_cast<unsigned long long>(b.key.extent),
                    pieces_json(f.pieces[i]).c_str(), static_cast<unsigned long long>(f.missing_sectors[i]), hex(f.tree[i]).c_str(),
                    hex(f.data[i]).c_str(), i + 1 < f.blocks.size() ? "," : "");
    }
    std::printf("  ]}%s\n", last ? "" : ",");
}

int probe(int argc, char** argv)
{
    std::vector<ProbedFile> files;
    for (int i = 1; i < argc; ++i)
        files.push_back(open_probed(argv[i]));
    const ChecksumInfo info = checksum_info(files.front().fd);

    g_counted = {};
    ChecksumSearchStats stats = fingerprint_all_from_tree(info, files);
    const Counters tree = g_counted;

    g_counted = {};
    std::vector<uint8_t> buffer;
    uint64_t reported = 0;
    for (ProbedFile& f : files)
        for (size_t i = 0; i < f.blocks.size(); ++i)
            f.data[i] = fingerprint_from_file(f.fd, info, f.blocks[i].file_offset, f.blocks[i].length, buffer, reported);
    const Counters data = g_counted;

    for (ProbedFile& f : files)
        count_missing(info, f);

    std::printf("{\"checksum\": {\"type\": \"%s\", \"size\": %u, \"sectorsize\": %u, \"nodesize\": %u},\n",
                std::string(checksum_type_name(info.type)).c_str(), info.csum_size, info.sectorsize, info.nodesize);
    std::printf(" \"tree\": {\"tree_search_calls\": %llu, \"read_bytes\": %llu, \"read_calls\": %llu, "
                "\"searches\": %llu, \"items\": %llu, \"item_bytes\": %llu},\n",
                static_cast<unsigned long long>(tree.tree_search_calls), static_cast<unsigned long long>(tree.read_bytes),
                static_cast<unsigned long long>(tree.read_calls), static_cast<unsigned long long>(stats.searches),
                static_cast<unsigned long long>(stats.items), static_cast<unsigned long long>(stats.item_bytes));
    std::printf(" \"data\": {\"read_bytes\": %llu, \"read_calls\": %llu, \"reported_bytes\": %llu},\n",
                static_cast<unsigned long long>(data.read_bytes), static_cast<unsigned long long>(data.read_calls),
                static_cast<unsigned long long>(reported));
    std::printf(" \"files\": [\n");
    for (size_t i = 0; i < files.size(); ++i)
        print_file(files[i], i + 1 == files.size());
    std::printf("]}\n");
    return 0;
}

} // namespace
} // namespace snapdedupe

int main(int argc, char** argv)
{
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s FILE...\n", argv[0]);
        return 2;
    }
    try {
        return snapdedupe::probe(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "fingerprint_probe: %s\n", e.what());
        return 1;
    }
}
