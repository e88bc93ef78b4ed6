// /etc/snapdedupe.conf (plugin/cli/config_file.h), read from files in a temporary directory.
#include "temp_dir.h"
#include "plugin/cli/config_file.h"

#include "plugin/run.h" // UsageError

#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

using namespace snapdedupe;

using snapdedupe::testing::file_bytes;
using snapdedupe::testing::TempDir;

namespace {


// The message of the UsageError reading `text` throws; fails the test if none is thrown.
std::string usage_error(const std::string& text)
{
    TempDir dir;
    std::string file = dir.write("snapdedupe.conf", text);
    try {
        read_config(file, true);
    } catch (const UsageError& e) {
        std::string message = e.what();
        CHECK(message.starts_with("config " + file + ": ")); // names the file
        return message;
    }
    FAIL("no UsageError for: " << text);
    return "";
}

} // namespace

TEST_CASE("config: paths, db and readonly-only")
{
    TempDir dir;
    std::string file = dir.write("snapdedupe.conf", "# nightly\n"
                                                    "path = /.snapshots\n"
                                                    "path = /home/.snapshots\n"
                                                    "db = /var/lib/snapdedupe/custom.sqlite\n"
                                                    "readonly-only = true\n");
    ConfigFile config = read_config(file, true);
    CHECK(config.paths == std::vector<std::string>{"/.snapshots", "/home/.snapshots"});
    REQUIRE(config.db);
    CHECK(*config.db == "/var/lib/snapdedupe/custom.sqlite");
    REQUIRE(config.readonly_only);
    CHECK(*config.readonly_only);
}

TEST_CASE("config: keys not given stay unset, so the command line's defaults apply")
{
    TempDir dir;
    ConfigFile config = read_config(dir.write("snapdedupe.conf", "# nothing set\n\n"), true);
    CHECK(config.paths.empty());
    CHECK_FALSE(config.db);
    CHECK_FALSE(config.readonly_only);

    ConfigFile off = read_config(dir.write("off.conf", "readonly-only = false\n"), true);
    REQUIRE(off.readonly_only);
    CHECK_FALSE(*off.readonly_only);
}

TEST_CASE("config: a missing file is empty unless it was named")
{
    TempDir dir;
    ConfigFile config = read_config(dir.path("absent.conf"), false);
    CHECK(config.paths.empty());
    CHECK_FALSE(config.db);
    CHECK_FALSE(config.readonly_only);
    CHECK_THROWS_AS(read_config(dir.path("absent.conf"), true), UsageError);
}

TEST_CASE("config: a directory or a FIFO is not a config file")
{
    TempDir dir;
    CHECK_THROWS_AS(read_config(dir.path(""), false), UsageError);
    // Refused at once, not after waiting for a writer.
    REQUIRE(::mkfifo(dir.path("fifo").c_str(), 0600) == 0);
    CHECK_THROWS_AS(read_config(dir.path("fifo"), true), UsageError);
}

TEST_CASE("config: unknown keys are refused")
{
    CHECK(usage_error("paths = /.snapshots\n").find("paths") != std::string::npos);
    usage_error("[section]\npath = /.snapshots\n");
}

TEST_CASE("config: dry-run is refused, whatever its value")
{
    CHECK(usage_error("dry-run = true\n").find("--dry-run") != std::string::npos);
    usage_error("dry-run = false\n");
    usage_error("dry-run =\n");
}

TEST_CASE("config: bad values are refused")
{
    usage_error("readonly-only = maybe\n");
    usage_error("path =\n");
    usage_error("db = a\ndb = b\n"); // one index only
}
