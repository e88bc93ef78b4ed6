// Inputs that once crashed the parser or the change-set builder (found by
// tests/fuzz/run-fuzz.sh, or written by hand while building it) stay fixed: each must now
// parse, or fail with the errors a malformed stream is allowed to raise.
#include "snapshots/change_set.h"
#include "snapshots/send_stream.h"
#include "snapshots/kernel/unique_fd.h"

#include <doctest/doctest.h>
#include <fcntl.h>

#include <algorithm>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

using namespace snapdedupe;

namespace {

const std::filesystem::path kRegressions = std::filesystem::path(SNAPDEDUPE_FIXTURES) / "fuzz-regressions";

// The fuzz target's loop: a fresh builder per sub-stream. Returns the error message, or
// nullopt if the stream was accepted; any other exception escapes and fails the test.
std::optional<std::string> replay(const std::filesystem::path& file)
{
    LabeledFd stream(UniqueFd(::open(file.c_str(), O_RDONLY | O_CLOEXEC)), file.filename().string());
    REQUIRE(stream.valid());
    try {
        send::SendStreamParser parser(stream);
        std::optional<ChangeSetBuilder> builder(std::in_place);
        send::SendCommand command;
        while (parser.next(command)) {
            if (command.cmd == send::Command::END) {
                builder->finish();
                builder.emplace();
                continue;
            }
            builder->apply(command);
        }
        builder->finish();
        return std::nullopt;
    } catch (const std::runtime_error& e) { // SendStreamError is one too
        return std::string(e.what());
    }
}

} // namespace

TEST_CASE("every fuzz regression input ends in a parse error or a change set, never a crash")
{
    std::vector<std::filesystem::path> files;
    for (const auto& entry : std::filesystem::directory_iterator(kRegressions))
        if (entry.is_regular_file())
            files.push_back(entry.path());
    std::sort(files.begin(), files.end());
    REQUIRE_FALSE(files.empty());
    for (const auto& file : files) {
        INFO(file.filename().string());
        CHECK_NOTHROW(replay(file));
    }
}

TEST_CASE("a directory moved or linked under itself is an error, not endless recursion")
{
    // SNAPSHOT; RENAME a -> a/b/a; END. And: LINK a/b/x -> a; UNLINK a; END.
    for (const char* name : {"rename-dir-into-own-subtree.stream", "link-dir-then-unlink-cycle.stream"}) {
        INFO(name);
        std::optional<std::string> error = replay(kRegressions / name);
        REQUIRE(error.has_value());
        CHECK(error->find("its own ancestor") != std::string::npos);
    }
}
