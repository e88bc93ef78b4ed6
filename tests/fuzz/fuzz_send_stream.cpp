// libFuzzer target: bytes through SendStreamParser and ChangeSetBuilder.
//
// A malformed stream may only end in SendStreamError or std::runtime_error (the
// builder's "cannot apply"; SysError derives from it too). Anything else -- a crash, a
// sanitizer report, another exception type, a hang -- is a bug.
//
// Two ways to read an input, so mutations reach both the byte level and the model:
//  * It starts with the send-stream magic (the committed fixtures do): it is parsed as
//    given, which exercises framing, version and CRC checks, and then again with every
//    command's CRC recomputed. A random mutation almost never keeps a CRC32C valid, so
//    without that second pass the attribute decoder would only see unmutated commands.
//  * Anything else is a recipe: FuzzedDataProvider turns it into a well-framed stream of
//    commands over a handful of path names ("a/b", "o257-7-0"...) with edge-case numbers.
//    Byte mutations of a real stream almost never produce a consistent rename of one
//    name into another, which is where the change-set model can go wrong.
//
// Built and run by tests/fuzz/run-fuzz.sh.
#include "snapshots/change_set.h"
#include "snapshots/crc32c.h"
#include "snapshots/send_protocol.h"
#include "snapshots/send_stream.h"

#include <fuzzer/FuzzedDataProvider.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using namespace snapdedupe;
using send::Attr;
using send::Command;

uint32_t load_le32(const uint8_t* p)
{
    return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
           (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

void store_le(std::vector<uint8_t>& out, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; ++i)
        out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

void store_le32_at(uint8_t* p, uint32_t v)
{
    for (int i = 0; i < 4; ++i)
        p[i] = static_cast<uint8_t>(v >> (8 * i));
}

// Walks the framing the way the parser does (header, commands, a new header after each
// END) and rewrites each complete command's CRC. Stops at the first frame that does not
// fit; the parser then reports the truncation itself.
void fix_crcs(std::vector<uint8_t>& bytes)
{
    std::size_t pos = send::kStreamHeaderSize;
    while (pos + send::kCommandHeaderSize <= bytes.size()) {
        uint8_t* cmd = bytes.data() + pos;
        const uint64_t total = send::kCommandHeaderSize + static_cast<uint64_t>(load_le32(cmd));
        if (total > bytes.size() - pos)
            return;
        std::memset(cmd + send::kCommandCrcOffset, 0, 4);
        store_le32_at(cmd + send::kCommandCrcOffset, crc32c(0, cmd, total));
        const bool end = (cmd[4] | (cmd[5] << 8)) == static_cast<int>(Command::END);
        pos += total + (end ? send::kStreamHeaderSize : 0);
    }
}

// Writes a well-framed stream: header, then commands with valid lengths and CRCs.
class StreamWriter {
public:
    explicit StreamWriter(uint32_t version) : version_(version)
    {
        out_.insert(out_.end(), send::kStreamMagic, send::kStreamMagic + send::kStreamMagicSize);
        store_le(out_, version, 4);
    }
    void begin(Command cmd)
    {
        start_ = out_.size();
        store_le(out_, 0, 4); // length, set in end()
        store_le(out_, static_cast<uint16_t>(cmd), 2);
        store_le(out_, 0, 4); // crc, set in end()
    }
    void attr(Attr type, const void* value, std::size_t len)
    {
        store_le(out_, static_cast<uint16_t>(type), 2);
        if (type == Attr::DATA && version_ >= 2) { // no length: runs to the end
            data_last_ = true;
        } else {
            store_le(out_, len, 2);
        }
        const auto* bytes = static_cast<const uint8_t*>(value);
        out_.insert(out_.end(), bytes, bytes + len);
    }
    void end()
    {
        uint8_t* cmd = out_.data() + start_;
        store_le32_at(cmd, static_cast<uint32_t>(out_.size() - start_ - send::kCommandHeaderSize));
        store_le32_at(cmd + send::kCommandCrcOffset, crc32c(0, cmd, out_.size() - start_));
        data_last_ = false;
    }
    bool data_written() const { return data_last_; }
    std::vector<uint8_t>& bytes() { return out_; }

private:
    uint32_t version_;
    std::size_t start_ = 0;
    bool data_last_ = false;
    std::vector<uint8_t> out_;
};

// The attributes the kernel sends with each command; others are rarely added.
std::vector<Attr> natural_attrs(Command cmd)
{
    switch (cmd) {
    case Command::SUBVOL:
    case Command::SNAPSHOT:
        return {Attr::PATH, Attr::UUID, Attr::CTRANSID, Attr::CLONE_UUID, Attr::CLONE_CTRANSID};
    case Command::MKFILE:
    case Command::MKDIR:
    case Command::MKNOD:
    case Command::MKFIFO:
    case Command::MKSOCK: return {Attr::PATH, Attr::INO, Attr::MODE, Attr::RDEV};
    case Command::SYMLINK: return {Attr::PATH, Attr::INO, Attr::PATH_LINK};
    case Command::RENAME: return {Attr::PATH, Attr::PATH_TO};
    case Command::LINK: return {Attr::PATH, Attr::PATH_LINK};
    case Command::SET_XATTR:
    case Command::REMOVE_XATTR: return {Attr::PATH, Attr::XATTR_NAME, Attr::XATTR_DATA};
    case Command::WRITE: return {Attr::PATH, Attr::FILE_OFFSET, Attr::DATA};
    case Command::CLONE:
        return {Attr::PATH,       Attr::FILE_OFFSET,  Attr::CLONE_LEN,   Attr::CLONE_UUID,
                Attr::CLONE_CTRANSID, Attr::CLONE_PATH, Attr::CLONE_OFFSET};
    case Command::TRUNCATE:
    case Command::UPDATE_EXTENT: return {Attr::PATH, Attr::FILE_OFFSET, Attr::SIZE};
    case Command::FALLOCATE: return {Attr::PATH, Attr::FALLOCATE_MODE, Attr::FILE_OFFSET, Attr::SIZE};
    case Command::ENCODED_WRITE:
        return {Attr::PATH, Attr::FILE_OFFSET, Attr::UNENCODED_FILE_LEN, Attr::UNENCODED_LEN,
                Attr::UNENCODED_OFFSET, Attr::COMPRESSION, Attr::DATA};
    default: return {Attr::PATH};
    }
}

std::string fuzz_path(FuzzedDataProvider& in)
{
    static constexpr const char* kNames[] = {"a", "b", "c", "o257-7-0", "", ".", "d e"};
    std::string path;
    const int depth = in.ConsumeIntegralInRange(0, 4);
    for (int i = 0; i < depth; ++i)
        path += (i ? "/" : "") + std::string(in.PickValueInArray(kNames));
    return path;
}

uint64_t fuzz_number(FuzzedDataProvider& in)
{
    static constexpr uint64_t kEdges[] = {0,         1,          4095,       4096,      65536,
                                          131072,    1ull << 30, 1ull << 63, ~0ull - 4095, ~0ull};
    return in.ConsumeBool() ? in.PickValueInArray(kEdges) : in.ConsumeIntegral<uint64_t>();
}

void fuzz_attr(FuzzedDataProvider& in, StreamWriter& w, Attr a)
{
    switch (a) {
    case Attr::PATH:
    case Attr::PATH_TO:
    case Attr::PATH_LINK:
    case Attr::CLONE_PATH:
    case Attr::XATTR_NAME: {
        std::string p = fuzz_path(in);
        w.attr(a, p.data(), p.size());
        break;
    }
    case Attr::UUID:
    case Attr::CLONE_UUID: {
        uint8_t uuid[16] = {};
        w.attr(a, uuid, sizeof uuid);
        break;
    }
    case Attr::DATA:
    case Attr::XATTR_DATA: {
        std::vector<uint8_t> data(in.ConsumeIntegralInRange<std::size_t>(0, 300));
        w.attr(a, data.data(), data.size());
        break;
    }
    default: {
        // Integers in every width the parser accepts, and a few it must reject.
        const int width = in.PickValueInArray({8, 8, 8, 4, 1, 3});
        std::vector<uint8_t> bytes;
        store_le(bytes, fuzz_number(in), width);
        w.attr(a, bytes.data(), bytes.size());
    }
    }
}

// A stream of up to 200 commands; the first is usually SNAPSHOT (incremental).
std::vector<uint8_t> synthesize(const uint8_t* data, std::size_t size)
{
    FuzzedDataProvider in(data, size);
    StreamWriter w(in.ConsumeIntegralInRange<uint32_t>(send::kMinVersion, send::kMaxVersion));
    bool first = true;
    for (int n = 0; n < 200 && in.remaining_bytes() > 0; ++n, first = false) {
        Command cmd = first ? (in.ConsumeBool() ? Command::SNAPSHOT : Command::SUBVOL)
                            : static_cast<Command>(in.ConsumeIntegralInRange<uint16_t>(1, send::kMaxCommand));
        if (cmd == Command::END)
            cmd = Command::UPDATE_EXTENT; // END mid-stream would need a new header
        w.begin(cmd);
        for (Attr a : natural_attrs(cmd))
            if (!w.data_written() && in.ConsumeIntegralInRange(0, 15) != 0)
                fuzz_attr(in, w, a);
        if (!w.data_written() && in.ConsumeIntegralInRange(0, 15) == 0)
            fuzz_attr(in, w, static_cast<Attr>(in.ConsumeIntegralInRange<uint16_t>(1, send::kMaxAttr)));
        w.end();
    }
    w.begin(Command::END);
    w.end();
    return std::move(w.bytes());
}

// The parser reads a file descriptor, so the input goes into one reused memfd.
const LabeledFd& input_stream(const uint8_t* data, std::size_t size)
{
    static const LabeledFd stream = [] {
        UniqueFd made(::memfd_create("fuzz-send-stream", MFD_CLOEXEC));
        if (!made)
            std::abort();
        return LabeledFd(std::move(made), "fuzz-input");
    }();
    const int fd = stream.get();
    if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, data, size, 0) != static_cast<ssize_t>(size) ||
        ::lseek(fd, 0, SEEK_SET) != 0)
        std::abort();
    return stream;
}

// run-fuzz.sh sets SNAPDEDUPE_FUZZ_DUMP when it replays a crash: every stream about to
// be parsed is written there, so after the crash the file holds the stream that caused
// it -- a real send stream, which the unit regression test can replay, not a recipe.
void dump_for_replay(const uint8_t* data, std::size_t size)
{
    static const char* path = std::getenv("SNAPDEDUPE_FUZZ_DUMP");
    if (!path)
        return;
    if (std::FILE* f = std::fopen(path, "wb")) {
        std::fwrite(data, 1, size, f);
        std::fclose(f);
    }
}

// The loop of snapshot_diff.cpp, except that each sub-stream of a multi-subvolume
// stream gets a fresh builder, so later sub-streams reach the model too.
void parse_and_build(const uint8_t* data, std::size_t size)
{
    dump_for_replay(data, size);
    try {
        send::SendStreamParser parser(input_stream(data, size));
        std::optional<ChangeSetBuilder> builder(std::in_place);
        send::SendCommand command;
        while (parser.next(command)) {
            if (command.cmd == Command::END) {
                builder->finish();
                builder.emplace();
                continue;
            }
            builder->apply(command);
        }
        builder->finish();
    } catch (const send::SendStreamError&) {
    } catch (const std::runtime_error&) {
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size)
{
    if (size < send::kStreamMagicSize || std::memcmp(data, send::kStreamMagic, send::kStreamMagicSize) != 0) {
        parse_and_build(data, size); // still a bad-magic error first
        std::vector<uint8_t> stream = synthesize(data, size);
        parse_and_build(stream.data(), stream.size());
        return 0;
    }
    parse_and_build(data, size);
    std::vector<uint8_t> fixed(data, data + size);
    fix_crcs(fixed);
    if (std::memcmp(fixed.data(), data, size) != 0)
        parse_and_build(fixed.data(), fixed.size());
    return 0;
}
