// What: the logger behind mt::core::log. Prefix: `[HH:MM:SS.mmm] [rank r/n] level: `.
#include "core/log.h"

#include <atomic>
#include <memory>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "core/error.h"

namespace mt::core::log {

namespace {
std::atomic<int> g_level{static_cast<int>(Level::Info)};
std::atomic<bool> g_all_to_stderr{false};

spdlog::logger& out_logger() {
  static std::shared_ptr<spdlog::logger> l = [] {
    auto lg = std::make_shared<spdlog::logger>("mt_out", std::make_shared<spdlog::sinks::stdout_sink_mt>());
    lg->set_pattern("%v");
    lg->flush_on(spdlog::level::trace);
    return lg;
  }();
  return *l;
}
spdlog::logger& err_logger() {
  static std::shared_ptr<spdlog::logger> l = [] {
    auto lg = std::make_shared<spdlog::logger>("mt_err", std::make_shared<spdlog::sinks::stderr_sink_mt>());
    lg->set_pattern("%v");
    lg->flush_on(spdlog::level::trace);
    return lg;
  }();
  return *l;
}
}  // namespace

void set_level(Level lv) { g_level = static_cast<int>(lv); }
void set_all_to_stderr(bool on) { g_all_to_stderr = on; }
Level level() { return static_cast<Level>(g_level.load()); }

Level parse_level(const std::string& s) {
  if (s == "debug") return Level::Debug;
  if (s == "info") return Level::Info;
  if (s == "warn") return Level::Warn;
  if (s == "error") return Level::Error;
  if (s == "off") return Level::Off;
  throw Error(fmt::format("unknown log level '{}'", s)).with_hint("use debug, info, warn, error or off");
}

void write(Level lv, const std::string& msg) {
  static const char* names[] = {"debug", "info", "warn", "error", "off"};
  const int r = process_rank();
  std::string rank = r >= 0 ? fmt::format("[rank {}/{}] ", r, process_world_size()) : std::string();
  // spdlog's %v with our own prefix keeps the format stable and greppable.
  auto now = std::chrono::system_clock::now();
  auto t = std::chrono::system_clock::to_time_t(now);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  localtime_r(&t, &tm);
  std::string line = fmt::format("[{:02}:{:02}:{:02}.{:03}] {}{}: {}", tm.tm_hour, tm.tm_min, tm.tm_sec,
                                 ms, rank, names[static_cast<int>(lv)], msg);
  if (lv >= Level::Warn || g_all_to_stderr) {
    err_logger().info(line);
  } else {
    out_logger().info(line);
  }
}

}  // namespace mt::core::log
