// The send-stream parser against real streams (and btrfs-progs' reading of them), and
// against damaged and hand-built ones.
#include "snapshots/crc32c.h"
#include "snapshots/send_stream.h"
#include "snapshots/unique_fd.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cctype>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <set>
#include <sstream>
#include <thread>

using namespace snapdedupe;
using namespace snapdedupe::send;

namespace {

const std::vector<std::string> kFixtures = {
    "v1-nodata-all",     "v1-nodata-dir-rename", "v1-nodata-hardlink-unlink", "v1-nodata-truncate",
    "v1-nodata-orphan-swap", "v1-full-data",     "v1-nodata-two-subvols",     "v2-compressed",
};

std::string fixture(const std::string& name, const char* ext)
{
    return std::string(SNAPDEDUPE_FIXTURES) + "/streams/" + name + ext;
}

std::vector<uint8_t> read_bytes(const std::string& path)
{
    std::ifstream in(path, std::ios::binary);
    REQUIRE(in.good());
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<SendCommand> parse_all(SendStreamParser& parser)
{
    std::vector<SendCommand> cmds;
    SendCommand cmd;
    while (parser.next(cmd))
        cmds.push_back(cmd);
    CHECK_FALSE(parser.next(cmd)); // stays finished
    return cmds;
}

std::vector<SendCommand> parse_file(const std::string& path)
{
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    REQUIRE(fd.valid());
    SendStreamParser parser(fd.get(), path);
    return parse_all(parser);
}

// Feeds bytes through a pipe from a writer thread, `chunk` bytes per write, so the
// parser sees short reads. The optional hook runs in the writer before it writes.
std::vector<SendCommand> parse_via_pipe(const std::vector<uint8_t>& bytes, std::size_t chunk,
                                        const std::function<void()>& before_write = {})
{
    ::signal(SIGPIPE, SIG_IGN); // the parser may stop early on bad input
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    UniqueFd read_end(fds[0]);
    auto writer = std::thread([write_fd = fds[1], &bytes, chunk, before_write] {
        UniqueFd w(write_fd);
        if (before_write)
            before_write();
        for (std::size_t pos = 0; pos < bytes.size();) {
            ssize_t n = ::write(w.get(), bytes.data() + pos, std::min(chunk, bytes.size() - pos));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                return; // reader gone
            pos += static_cast<std::size_t>(n);
        }
    });
    try {
        SendStreamParser parser(read_end.get(), "pipe");
        auto cmds = parse_all(parser);
        read_end.reset();
        writer.join();
        return cmds;
    } catch (...) {
        read_end.reset();
        writer.join();
        throw;
    }
}

std::string lower(std::string_view s)
{
    std::string out(s);
    for (char& c : out)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

struct DumpLine {
    std::string name, path;
    std::map<std::string, std::string> kv;
};

// `btrfs receive --dump`: "<command> <path> key=value ...", paths as ./<subvol>/<path>.
std::vector<DumpLine> read_dump(const std::string& path)
{
    std::ifstream in(path);
    REQUIRE(in.good());
    std::vector<DumpLine> lines;
    for (std::string text; std::getline(in, text);) {
        std::istringstream words(text);
        DumpLine line;
        words >> line.name >> line.path;
        for (std::string word; words >> word;) {
            if (word.back() == ',')
                word.pop_back();
            auto eq = word.find('=');
            if (eq != std::string::npos)
                line.kv[word.substr(0, eq)] = word.substr(eq + 1);
        }
        lines.push_back(line);
    }
    return lines;
}

std::string uuid_text(const std::array<uint8_t, 16>& u)
{
    std::string out;
    char hex[3];
    for (int i = 0; i < 16; ++i) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out += '-';
        std::snprintf(hex, sizeof hex, "%02x", u[i]);
        out += hex;
    }
    return out;
}

uint64_t num(const DumpLine& line, const std::string& key, int base = 10)
{
    auto it = line.kv.find(key);
    REQUIRE_MESSAGE(it != line.kv.end(), line.name << " " << line.path << " lacks " << key);
    return std::stoull(it->second, nullptr, base);
}

// Every attribute the dump prints for this command must match what we decoded.
void check_against_dump(const SendCommand& c, const DumpLine& d, const std::string& subvol)
{
    const std::string prefix = "./" + subvol + "/";
    switch (c.cmd) {
    case Command::SUBVOL:
    case Command::SNAPSHOT:
        CHECK(d.kv.at("uuid") == uuid_text(c.uuid.value()));
        CHECK(num(d, "transid") == c.ctransid.value());
        if (c.cmd == Command::SNAPSHOT) {
            CHECK(d.kv.at("parent_uuid") == uuid_text(c.clone_uuid.value()));
            CHECK(num(d, "parent_transid") == c.clone_ctransid.value());
        }
        break;
    case Command::RENAME: CHECK(d.kv.at("dest") == prefix + c.path_to.value()); break;
    case Command::LINK:
    case Command::SYMLINK: CHECK(d.kv.at("dest") == c.path_link.value()); break;
    case Command::MKNOD:
        CHECK(num(d, "mode", 8) == c.mode.value());
        CHECK(num(d, "dev", 16) == c.rdev.value());
        break;
    case Command::UPDATE_EXTENT:
        CHECK(num(d, "offset") == c.file_offset.value());
        CHECK(num(d, "len") == c.size.value());
        break;
    case Command::WRITE:
        CHECK(num(d, "offset") == c.file_offset.value());
        CHECK(num(d, "len") == c.data_len);
        break;
    case Command::ENCODED_WRITE:
        CHECK(num(d, "offset") == c.file_offset.value());
        CHECK(num(d, "len") == c.data_len);
        CHECK(num(d, "unencoded_file_len") == c.unencoded_file_len.value());
        CHECK(num(d, "unencoded_len") == c.unencoded_len.value());
        CHECK(num(d, "unencoded_offset") == c.unencoded_offset.value());
        CHECK(num(d, "compression") == c.compression.value());
        CHECK(num(d, "encryption") == c.encryption.value_or(0));
        break;
    case Command::CLONE:
        CHECK(num(d, "offset") == c.file_offset.value());
        CHECK(num(d, "len") == c.clone_len.value());
        CHECK(num(d, "clone_offset") == c.clone_offset.value());
        CHECK(d.kv.at("from") == prefix + c.clone_path.value());
        break;
    case Command::TRUNCATE: CHECK(num(d, "size") == c.size.value()); break;
    case Command::CHMOD: CHECK(num(d, "mode", 8) == c.mode.value()); break;
    case Command::CHOWN:
        CHECK(num(d, "uid") == c.uid.value());
        CHECK(num(d, "gid") == c.gid.value());
        break;
    case Command::SET_XATTR:
        CHECK(d.kv.at("name") == c.xattr_name.value());
        CHECK(num(d, "len") == c.data_len);
        break;
    case Command::REMOVE_XATTR: CHECK(d.kv.at("name") == c.xattr_name.value()); break;
    case Command::FALLOCATE:
        CHECK(num(d, "mode") == c.fallocate_mode.value());
        CHECK(num(d, "offset") == c.file_offset.value());
        CHECK(num(d, "len") == c.size.value());
        break;
    default: break;
    }
}

// Offset of the first command of the given type.
const SendCommand& first_of(const std::vector<SendCommand>& cmds, Command type)
{
    for (const auto& c : cmds)
        if (c.cmd == type)
            return c;
    FAIL("no " << command_name(type) << " in fixture");
    throw std::logic_error("unreachable");
}

void store_le(std::vector<uint8_t>& b, std::size_t at, uint64_t v, int width)
{
    for (int i = 0; i < width; ++i)
        b[at + i] = static_cast<uint8_t>(v >> (8 * i));
}

// Recomputes the CRC of the command at `at`, so a test can damage something else.
void reseal(std::vector<uint8_t>& b, std::size_t at)
{
    uint32_t len = b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (uint32_t(b[at + 3]) << 24);
    store_le(b, at + kCommandCrcOffset, 0, 4);
    store_le(b, at + kCommandCrcOffset, crc32c(0, b.data() + at, kCommandHeaderSize + len), 4);
}

// Hand-built streams, for what the kernel here does not emit.
struct StreamBuilder {
    std::vector<uint8_t> bytes;
    std::vector<uint8_t> payload;
    explicit StreamBuilder(uint32_t version)
    {
        bytes.assign(kStreamMagic, kStreamMagic + kStreamMagicSize);
        bytes.resize(kStreamHeaderSize);
        store_le(bytes, kStreamMagicSize, version, 4);
    }
    StreamBuilder& tlv(Attr type, const void* data, std::size_t len)
    {
        std::size_t at = payload.size();
        payload.resize(at + kTlvHeaderSize + len);
        store_le(payload, at, static_cast<uint16_t>(type), 2);
        store_le(payload, at + 2, len, 2);
        std::memcpy(payload.data() + at + kTlvHeaderSize, data, len);
        return *this;
    }
    StreamBuilder& str(Attr type, const std::string& s) { return tlv(type, s.data(), s.size()); }
    StreamBuilder& u64(Attr type, uint64_t v) { return tlv(type, &v, 8); } // little-endian host
    StreamBuilder& v2_data(std::size_t len)
    {
        std::size_t at = payload.size();
        payload.resize(at + kV2DataHeaderSize + len, 0xAB);
        store_le(payload, at, static_cast<uint16_t>(Attr::DATA), 2);
        return *this;
    }
    StreamBuilder& end_command(Command cmd)
    {
        std::size_t at = bytes.size();
        bytes.resize(at + kCommandHeaderSize);
        store_le(bytes, at, payload.size(), 4);
        store_le(bytes, at + 4, static_cast<uint16_t>(cmd), 2);
        bytes.insert(bytes.end(), payload.begin(), payload.end());
        payload.clear();
        reseal(bytes, at);
        return *this;
    }
};

template <typename F>
std::string error_of(F&& f)
{
    try {
        f();
    } catch (const SendStreamError& e) {
        return e.what();
    }
    return "(no SendStreamError)";
}

} // namespace

TEST_CASE("crc32c: raw kernel form, seed 0, no final inversion")
{
    const char* check = "123456789";
    CHECK((~crc32c(~0u, check, 9)) == 0xE3069283u); // the standard CRC32C check value
    CHECK(crc32c(0, check, 0) == 0u);
    CHECK(crc32c(0, check, 9) != (~crc32c(~0u, check, 9)));
    // Incremental use continues from the seed.
    CHECK(crc32c(crc32c(0, check, 4), check + 4, 5) == crc32c(0, check, 9));
}

TEST_CASE("protocol numbers and names")
{
    CHECK(static_cast<int>(Command::UPDATE_EXTENT) == 22);
    CHECK(static_cast<int>(Command::FALLOCATE) == 23);
    CHECK(static_cast<int>(Command::FILEATTR) == 24);
    CHECK(static_cast<int>(Command::ENCODED_WRITE) == 25);
    CHECK(static_cast<int>(Command::ENABLE_VERITY) == 26);
    CHECK(static_cast<int>(Attr::CLONE_LEN) == 24);
    CHECK(static_cast<int>(Attr::UNENCODED_FILE_LEN) == 27);
    CHECK(static_cast<int>(Attr::ENCRYPTION) == 31);
    CHECK(static_cast<int>(Attr::VERITY_SIG_DATA) == 35);
    CHECK(command_name(Command::UPDATE_EXTENT) == "UPDATE_EXTENT");
    CHECK(command_name(static_cast<Command>(99)) == "UNKNOWN");
    CHECK(attr_name(Attr::PATH_TO) == "PATH_TO");
    for (uint16_t i = 0; i <= kMaxCommand; ++i)
        CHECK(command_name(static_cast<Command>(i)) != "UNKNOWN");
    for (uint16_t i = 0; i <= kMaxAttr; ++i)
        CHECK(attr_name(static_cast<Attr>(i)) != "UNKNOWN");
}

TEST_CASE("every fixture parses to exactly what btrfs receive --dump lists")
{
    for (const auto& name : kFixtures) {
        CAPTURE(name);
        auto cmds = parse_file(fixture(name, ".stream"));
        auto dump = read_dump(fixture(name, ".dump"));
        std::vector<SendCommand> shown; // the dump does not print END
        for (const auto& c : cmds)
            if (c.cmd != Command::END)
                shown.push_back(c);
        REQUIRE(shown.size() == dump.size());
        CHECK(cmds.back().cmd == Command::END);
        std::string subvol;
        for (std::size_t i = 0; i < shown.size(); ++i) {
            const auto& c = shown[i];
            CAPTURE(i);
            CAPTURE(c.stream_offset);
            if (c.cmd == Command::SUBVOL || c.cmd == Command::SNAPSHOT)
                subvol = c.path.value();
            CHECK(lower(command_name(c.cmd)) == dump[i].name);
            REQUIRE(c.path.has_value());
            std::string expected_path =
                (c.cmd == Command::SUBVOL || c.cmd == Command::SNAPSHOT) ? "./" + *c.path : "./" + subvol + "/" + *c.path;
            CHECK(expected_path == dump[i].path);
            check_against_dump(c, dump[i], subvol);
        }
        // Offsets increase and the first command follows the 17-byte stream header.
        CHECK(cmds.front().stream_offset == kStreamHeaderSize);
        for (std::size_t i = 1; i < cmds.size(); ++i)
            CHECK(cmds[i].stream_offset > cmds[i - 1].stream_offset);
    }
}

TEST_CASE("a pipe with tiny short writes gives the same commands as the file")
{
    for (const auto& name : kFixtures) {
        CAPTURE(name);
        auto from_file = parse_file(fixture(name, ".stream"));
        auto from_pipe = parse_via_pipe(read_bytes(fixture(name, ".stream")), 7);
        REQUIRE(from_pipe.size() == from_file.size());
        for (std::size_t i = 0; i < from_file.size(); ++i) {
            CHECK(from_pipe[i].cmd == from_file[i].cmd);
            CHECK(from_pipe[i].stream_offset == from_file[i].stream_offset);
            CHECK(from_pipe[i].path == from_file[i].path);
            CHECK(from_pipe[i].data_len == from_file[i].data_len);
        }
    }
}

TEST_CASE("a read interrupted by a signal (EINTR) is retried")
{
    struct sigaction action {};
    action.sa_handler = [](int) {};
    action.sa_flags = 0; // no SA_RESTART: read() really returns EINTR
    struct sigaction old {};
    REQUIRE(::sigaction(SIGUSR1, &action, &old) == 0);
    const pthread_t reader = ::pthread_self();
    auto bytes = read_bytes(fixture("v1-nodata-truncate", ".stream"));
    auto cmds = parse_via_pipe(bytes, 4096, [reader] {
        // Give the reader time to block in read() on the empty pipe, then interrupt it.
        for (int i = 0; i < 3; ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(30));
            ::pthread_kill(reader, SIGUSR1);
        }
    });
    ::sigaction(SIGUSR1, &old, nullptr);
    CHECK(cmds.size() == 6);
}

TEST_CASE("command types covered by the fixtures")
{
    std::set<Command> seen;
    for (const auto& name : kFixtures)
        for (const auto& c : parse_file(fixture(name, ".stream")))
            seen.insert(c.cmd);
    for (Command expected :
         {Command::SUBVOL, Command::SNAPSHOT, Command::MKFILE, Command::MKDIR, Command::MKNOD,
          Command::MKFIFO, Command::MKSOCK, Command::SYMLINK, Command::RENAME, Command::LINK,
          Command::UNLINK, Command::RMDIR, Command::SET_XATTR, Command::REMOVE_XATTR, Command::WRITE,
          Command::CLONE, Command::TRUNCATE, Command::CHMOD, Command::CHOWN, Command::UTIMES,
          Command::END, Command::UPDATE_EXTENT, Command::FALLOCATE, Command::ENCODED_WRITE}) {
        CAPTURE(command_name(expected));
        CHECK(seen.count(expected) == 1);
    }
    // Not produced by this kernel for these fixtures: FILEATTR, ENABLE_VERITY (hand-built below).
    CHECK(seen.size() == 24);
}

TEST_CASE("versions and concatenated sub-streams")
{
    UniqueFd fd(::open(fixture("v2-compressed", ".stream").c_str(), O_RDONLY | O_CLOEXEC));
    SendStreamParser v2(fd.get(), "v2");
    CHECK(v2.version() == 2);
    auto enc = first_of(parse_all(v2), Command::ENCODED_WRITE);
    CHECK(enc.data_len == 4096); // v2 DATA: type-only header, runs to the end
    CHECK(enc.unencoded_file_len == 131072u);

    auto cmds = parse_file(fixture("v1-nodata-two-subvols", ".stream"));
    std::vector<std::string> subvols;
    int ends = 0;
    for (const auto& c : cmds) {
        if (c.cmd == Command::SUBVOL)
            subvols.push_back(*c.path);
        ends += c.cmd == Command::END;
    }
    CHECK(subvols == std::vector<std::string>{"dren-1", "hard-1"});
    CHECK(ends == 2);
}

TEST_CASE("a flipped byte is a CRC error naming the command and its offset")
{
    auto bytes = read_bytes(fixture("v1-nodata-all", ".stream"));
    auto target = first_of(parse_file(fixture("v1-nodata-all", ".stream")), Command::UPDATE_EXTENT);
    bytes[target.stream_offset + kCommandHeaderSize + 5] ^= 0x40;
    std::string expected = "bad CRC in UPDATE_EXTENT at byte " + std::to_string(target.stream_offset);
    CHECK(error_of([&] { parse_via_pipe(bytes, 512); }).find(expected) != std::string::npos);
    try {
        parse_via_pipe(bytes, 4096);
        FAIL("no error");
    } catch (const SendStreamError& e) {
        CHECK(e.offset() == target.stream_offset);
        CHECK(e.command() == "UPDATE_EXTENT");
    }
}

TEST_CASE("truncated streams")
{
    auto bytes = read_bytes(fixture("v1-nodata-all", ".stream"));
    auto rename = first_of(parse_file(fixture("v1-nodata-all", ".stream")), Command::RENAME);
    auto cut = [&](std::size_t n) { return std::vector<uint8_t>(bytes.begin(), bytes.begin() + n); };
    const std::string at = " at byte " + std::to_string(rename.stream_offset);

    CHECK(error_of([&] { parse_via_pipe(cut(rename.stream_offset + 15), 100); })
              .find("truncated inside RENAME" + at) != std::string::npos);
    CHECK(error_of([&] { parse_via_pipe(cut(rename.stream_offset + 4), 100); })
              .find("truncated inside command header" + at) != std::string::npos);
    CHECK(error_of([&] { parse_via_pipe(cut(rename.stream_offset), 100); })
              .find("truncated: input ends before the END command" + at) != std::string::npos);
    CHECK(error_of([&] { parse_via_pipe(cut(10), 100); }).find("truncated inside stream header") !=
          std::string::npos);
}

TEST_CASE("bad magic, bad version, empty input, trailing garbage")
{
    auto bytes = read_bytes(fixture("v1-nodata-truncate", ".stream"));
    auto bad_magic = bytes;
    bad_magic[0] = 'B';
    CHECK(error_of([&] { parse_via_pipe(bad_magic, 4096); })
              .find("send stream pipe: not a btrfs send stream (bad magic) at byte 0") != std::string::npos);
    auto bad_version = bytes;
    bad_version[kStreamMagicSize] = 9;
    CHECK(error_of([&] { parse_via_pipe(bad_version, 4096); }).find("unsupported stream version 9") !=
          std::string::npos);
    CHECK(error_of([&] { parse_via_pipe({}, 4096); }).find("not a btrfs send stream") != std::string::npos);
    // After END only a new stream header or EOF may follow.
    auto garbage = bytes;
    garbage.insert(garbage.end(), 4, 'j');
    CHECK(error_of([&] { parse_via_pipe(garbage, 4096); })
              .find("truncated inside stream header at byte " + std::to_string(bytes.size())) != std::string::npos);
    garbage.insert(garbage.end(), 40, 'j');
    CHECK(error_of([&] { parse_via_pipe(garbage, 4096); })
              .find("bad magic) at byte " + std::to_string(bytes.size())) != std::string::npos);
}

TEST_CASE("bounds: a TLV running past its command, an absurd command length")
{
    auto bytes = read_bytes(fixture("v1-nodata-all", ".stream"));
    auto rename = first_of(parse_file(fixture("v1-nodata-all", ".stream")), Command::RENAME);
    const std::size_t at = rename.stream_offset;
    // First TLV of the RENAME is PATH; make it claim more than the command holds, with a
    // valid CRC so only the bounds check can catch it.
    auto long_tlv = bytes;
    store_le(long_tlv, at + kCommandHeaderSize + 2, 0x7000, 2);
    reseal(long_tlv, at);
    CHECK(error_of([&] { parse_via_pipe(long_tlv, 4096); })
              .find("attribute PATH (length 28672) runs past the end of RENAME at byte " +
                    std::to_string(at)) != std::string::npos);

    auto huge = bytes;
    store_le(huge, at, 0x7FFFFFFF, 4);
    CHECK(error_of([&] { parse_via_pipe(huge, 4096); }).find("sanity limit in RENAME at byte " + std::to_string(at)) !=
          std::string::npos);

    StreamBuilder unknown(1);
    unknown.u64(static_cast<Attr>(77), 1).end_command(Command::UTIMES);
    CHECK(error_of([&] { parse_via_pipe(unknown.bytes, 4096); }).find("unknown attribute 77 in UTIMES") !=
          std::string::npos);
    StreamBuilder bad_cmd(1);
    bad_cmd.end_command(static_cast<Command>(200));
    CHECK(error_of([&] { parse_via_pipe(bad_cmd.bytes, 4096); }).find("unknown command 200") != std::string::npos);
}

TEST_CASE("hand-built v1, v2 and v3 commands decode")
{
    StreamBuilder v1(1);
    std::vector<uint8_t> data(300, 1);
    v1.str(Attr::PATH, "f").u64(Attr::FILE_OFFSET, 4096).tlv(Attr::DATA, data.data(), data.size());
    v1.end_command(Command::WRITE).end_command(Command::END);
    auto cmds = parse_via_pipe(v1.bytes, 3);
    REQUIRE(cmds.size() == 2);
    CHECK(cmds[0].cmd == Command::WRITE);
    CHECK(cmds[0].path == std::string("f"));
    CHECK(cmds[0].file_offset == 4096u);
    CHECK(cmds[0].data_len == 300);

    // v2: DATA is type-only and must not be read as a TLV, even when it is large.
    StreamBuilder v2(2);
    v2.str(Attr::PATH, "g").u64(Attr::FILE_OFFSET, 0).v2_data(100000).end_command(Command::WRITE);
    uint32_t mode = 3;
    v2.str(Attr::PATH, "g").tlv(Attr::FALLOCATE_MODE, &mode, 4).u64(Attr::FILE_OFFSET, 8).u64(Attr::SIZE, 16);
    v2.end_command(Command::FALLOCATE);
    v2.str(Attr::PATH, "g").u64(Attr::FILEATTR, 0x10).end_command(Command::FILEATTR);
    v2.end_command(Command::END);
    cmds = parse_via_pipe(v2.bytes, 65536);
    REQUIRE(cmds.size() == 4);
    CHECK(cmds[0].data_len == 100000);
    CHECK(cmds[1].fallocate_mode == 3u);
    CHECK(cmds[1].size == 16u);
    CHECK(cmds[2].cmd == Command::FILEATTR);
    CHECK(cmds[2].fileattr == 0x10u);

    StreamBuilder v3(3);
    uint8_t alg = 1;
    v3.str(Attr::PATH, "h").tlv(Attr::VERITY_ALGORITHM, &alg, 1).end_command(Command::ENABLE_VERITY);
    v3.end_command(Command::END);
    cmds = parse_via_pipe(v3.bytes, 65536);
    REQUIRE(cmds.size() == 2);
    CHECK(cmds[0].cmd == Command::ENABLE_VERITY);
    CHECK(cmds[0].path == std::string("h"));
}
