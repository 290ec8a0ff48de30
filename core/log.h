// What: leveled logging with a `[rank r/n]` prefix on every line.
// Why: under mpirun the output of all ranks interleaves; every line says whose it is.
// Built on spdlog (one logger, stderr for warnings and errors, stdout for the rest).
#pragma once

#include <string>

#include <fmt/format.h>

namespace mt::core::log {

enum class Level { Debug = 0, Info = 1, Warn = 2, Error = 3, Off = 4 };

void set_level(Level level);
Level level();
Level parse_level(const std::string& s);  // "debug" | "info" | "warn" | "error" | "off"
void write(Level level, const std::string& msg);
// Sends debug and info lines to stderr too (commands whose stdout is their output, e.g.
// `meshtrain generate` streaming text).
void set_all_to_stderr(bool on);

template <typename... Args>
void debug(fmt::format_string<Args...> f, Args&&... args) {
  if (level() <= Level::Debug) write(Level::Debug, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void info(fmt::format_string<Args...> f, Args&&... args) {
  if (level() <= Level::Info) write(Level::Info, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  if (level() <= Level::Warn) write(Level::Warn, fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void error(fmt::format_string<Args...> f, Args&&... args) {
  if (level() <= Level::Error) write(Level::Error, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace mt::core::log
