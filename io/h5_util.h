// What: io-internal helpers for the HDF5 C API, used by the dataset writer and reader, the
// shard reader and the checkpoint shards: an RAII closer for HDF5 handles and the check that
// turns a negative HDF5 return code into mt::core::Error.
// Why: every HDF5 call is checked and every handle closed on every path (errors unwind
// through them); one definition instead of one per file.
#pragma once

#include <hdf5.h>

#include <string>

#include "core/error.h"

namespace mt::io {

// Closes an HDF5 handle at scope exit: H5Handle f{H5Fopen(...), H5Fclose}. A negative id
// (a failed call) is not closed.
class H5Handle {
 public:
  H5Handle(hid_t id, herr_t (*close)(hid_t)) : id(id), close_(close) {}
  ~H5Handle() {
    if (id >= 0) close_(id);
  }
  H5Handle(const H5Handle&) = delete;
  H5Handle& operator=(const H5Handle&) = delete;

  const hid_t id;

 private:
  herr_t (*close_)(hid_t);
};

// Throws "HDF5 call <call> failed" naming `file` (and `hint`, if any) when rc < 0.
inline void h5check(herr_t rc, const char* call, const std::string& file, const char* hint = nullptr) {
  if (rc < 0) {
    core::Error e(fmt::format("HDF5 call {} failed", call));
    e.with_file(file);
    if (hint) e.with_hint(hint);
    throw e;
  }
}

}  // namespace mt::io
