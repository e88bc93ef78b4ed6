// Helpers shared by the send-stream parser tests (test_send_stream.cpp,
// test_send_stream_errors.cpp): the recorded fixtures, parsing from a file or through a
// pipe, and hand-built or damaged streams.
#pragma once

#include "snapshots/crc32c.h"
#include "snapshots/send_stream.h"
#include "snapshots/kernel/unique_fd.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace snapdedupe::send::test_helpers {

inline const std::vector<std::string> kFixtures = {
    "v1-nodata-all",     "v1-nodata-dir-rename", "v1-nodata-hardlink-unlink", "v1-nodata-truncate",
    "v1-nodata-orphan-swap", "v1-full-data",     "v1-nodata-two-subvols",     "v2-compressed",
};

inline std::string fixture(const std::string& name, const char* ext)
{
    return std::string(SNAPDEDUPE_FIXTURES) + "/streams/" + name + ext;
}

inline std::vector<uint8_t> read_bytes(const std::string& path)
{
    std::ifstream in(path, std::ios::binary);
    REQUIRE(in.good());
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

inline std::vector<SendCommand> parse_all(SendStreamParser& parser)
{
    std::vector<SendCommand> cmds;
    SendCommand cmd;
    while (parser.next(cmd))
        cmds.push_back(cmd);
    CHECK_FALSE(parser.next(cmd)); // stays finished
    return cmds;
}

inline std::vector<SendCommand> parse_file(const std::string& path)
{
    LabeledFd stream(UniqueFd(::open(path.c_str(), O_RDONLY | O_CLOEXEC)), path);
    REQUIRE(stream.valid());
    SendStreamParser parser(stream);
    return parse_all(parser);
}

// Feeds bytes through a pipe from a writer thread, `chunk` bytes per write, so the
// parser sees short reads. The optional hook runs in the writer before it writes.
inline std::vector<SendCommand> parse_via_pipe(const std::vector<uint8_t>& bytes, std::size_t chunk,
                                               const std::function<void()>& before_write = {})
{
    ::signal(SIGPIPE, SIG_IGN); // the parser may stop early on bad input
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    LabeledFd read_end(UniqueFd(fds[0]), "pipe");
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
        SendStreamParser parser(read_end);
        auto cmds = parse_all(parser);
        read_end = LabeledFd();
        writer.join();
        return cmds;
    } catch (...) {
        read_end = LabeledFd();
        writer.join();
        throw;
    }
}

// Offset of the first command of the given type.
inline const SendCommand& first_of(const std::vector<SendCommand>& cmds, Command type)
{
    for (const auto& c : cmds)
        if (c.cmd == type)
            return c;
    FAIL("no " << command_name(type) << " in fixture");
    throw std::logic_error("unreachable");
}

inline void store_le(std::vector<uint8_t>& b, std::size_t at, uint64_t v, int width)
{
    for (int i = 0; i < width; ++i)
        b[at + i] = static_cast<uint8_t>(v >> (8 * i));
}

// Recomputes the CRC of the command at `at`, so a test can damage something else.
inline void reseal(std::vector<uint8_t>& b, std::size_t at)
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

} // namespace snapdedupe::send::test_helpers
