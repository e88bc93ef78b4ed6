// The live progress line of `run` on a terminal: snapshot i of n, bytes done of its changed
// bytes, rate, ETA. It goes to stderr, so `--json` on stdout stays clean, and only when stderr
// is a terminal: a log, a pipe or a journal gets nothing extra. The run feeds it through
// RunOptions::progress; the engine never prints.
#pragma once

#include "plugin/cli/human_bytes.h"
#include "plugin/run.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <string>

namespace snapdedupe {

// "42 s", "3m05s", "2h07m".
inline std::string duration_text(double seconds)
{
    auto s = static_cast<uint64_t>(std::max(seconds, 0.0) + 0.5);
    char buf[32];
    if (s < 60)
        std::snprintf(buf, sizeof buf, "%llu s", static_cast<unsigned long long>(s));
    else if (s < 3600)
        std::snprintf(buf, sizeof buf, "%llum%02llus", static_cast<unsigned long long>(s / 60),
                      static_cast<unsigned long long>(s % 60));
    else
        std::snprintf(buf, sizeof buf, "%lluh%02llum", static_cast<unsigned long long>(s / 3600),
                      static_cast<unsigned long long>(s / 60 % 60));
    return buf;
}

// The line for `p`, `seconds` after its bytes started (once its send stream was read). Bytes,
// rate and ETA are the snapshot's, not the run's: what the next snapshot changed is unknown
// until its send stream has been read, and reading them all first would cost a second pass.
inline std::string progress_text(const RunProgress& p, double seconds)
{
    std::string text = "snapshot " + std::to_string(p.snapshot) + " of " + std::to_string(p.snapshots) + ": ";
    if (p.bytes_total == 0)
        text += "reading what changed";
    else
        text += human_bytes(static_cast<int64_t>(p.bytes_done)) + " of " +
                human_bytes(static_cast<int64_t>(p.bytes_total)) + " changed";
    if (p.bytes_done > 0 && seconds >= 1) { // a rate over less than a second says little
        double rate = static_cast<double>(p.bytes_done) / seconds;
        text += ", " + human_bytes(static_cast<int64_t>(rate)) + "/s, ETA " +
                duration_text(static_cast<double>(p.bytes_total - std::min(p.bytes_done, p.bytes_total)) / rate);
    }
    // A name is bytes: a control character in it must not reach the terminal as a command.
    std::string path = p.path;
    std::replace_if(path.begin(), path.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; },
                    '?');
    return text + " - " + path;
}

class ProgressLine {
public:
    ProgressLine() : enabled_(::isatty(STDERR_FILENO) == 1) {}
    ~ProgressLine() { clear(); } // also when the run throws: its error gets a clean line
    ProgressLine(const ProgressLine&) = delete;
    ProgressLine& operator=(const ProgressLine&) = delete;

    bool enabled() const { return enabled_; }

    // Redraws at most 4 times a second, and at once for a new snapshot or when its bytes
    // start: the rate counts from then, not from the start of its send stream.
    void update(const RunProgress& p)
    {
        if (!enabled_)
            return;
        auto now = std::chrono::steady_clock::now();
        if (p.snapshot != snapshot_ || (p.bytes_total > 0) != counting_) {
            snapshot_ = p.snapshot;
            counting_ = p.bytes_total > 0;
            started_ = now;
        } else if (now - drawn_ < std::chrono::milliseconds(250)) {
            return;
        }
        drawn_ = now;
        std::string text = progress_text(p, std::chrono::duration<double>(now - started_).count());
        text.resize(std::min(text.size(), width() - 1)); // one row: a wrapped line is not redrawn in place
        std::cerr << "\r" + text + "\033[K" << std::flush;
        shown_ = true;
    }

    // Erases the line, before the report is printed.
    void clear()
    {
        if (shown_)
            std::cerr << "\r\033[K" << std::flush;
        shown_ = false;
    }

private:
    static size_t width()
    {
        winsize ws{};
        return ::ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 10 ? ws.ws_col : 80;
    }

    bool enabled_;
    bool shown_ = false;
    size_t snapshot_ = 0;
    bool counting_ = false; // its send stream has been read
    std::chrono::steady_clock::time_point started_, drawn_;
};

} // namespace snapdedupe
