// Checkpoints: everything a training run needs to continue exactly where it stopped.
//
// A checkpoint is a safetensors file (nn/safetensors.hpp) holding
//   - every parameter and state tensor of the network, under its table name and shape;
//   - the optimizer's buffers as flat vectors "optimizer.<buffer>" (P), e.g. Adam's m and v;
//   - metadata: format "varnet-checkpoint", version, the trainer's step counter, the epoch in
//     progress and the steps of it already taken, the seed, the optimizer's name and update
//     count, the run's configuration ("config.<key>", compared on resume) and free values
//     ("extra.<key>", not compared), and a CRC-32 of all of the above.
// All noise is a pure function of (seed, layer, step, stream) and the data order of
// (seed, epoch), so the step counter and the epoch are the whole random state: a resumed run
// reproduces an uninterrupted one bit for bit.
//
// Saving refuses non-finite values (NonFiniteError, nothing written), keeps the previous
// checkpoint as "<path>.prev" when it is valid, and writes atomically (temporary file, fsync,
// rename). Reading validates the file's structure, the checksum and every metadata field before
// anything is applied, and applying checks the network, the optimizer and the configuration,
// leaving them unchanged on any mismatch.
#pragma once

#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "varnet/core/error.hpp"
#include "varnet/nn/network.hpp"
#include "varnet/nn/optimizer.hpp"
#include "varnet/nn/safetensors.hpp"
#include "varnet/nn/serialize.hpp"
#include "varnet/nn/trainer.hpp"

namespace varnet {

// Where a run stands, besides its tensors.
struct CheckpointInfo {
  uint64_t step = 0;            // the trainer's step counter (the noise's only state)
  int64_t epoch = 0;            // the epoch in progress, from 0
  int64_t step_in_epoch = 0;    // steps of that epoch already taken
  uint64_t seed = 0;            // of initialisation, noise and data order
  std::string optimizer;        // "adam", "sgd"; set by save and read
  int64_t optimizer_steps = 0;  // the optimizer's update count; set by save and read
  // Settings a resumed run must share (batch size, learning rate, ...), compared on resume.
  // save_checkpoint adds the optimizer's settings as "optimizer.<name>".
  std::map<std::string, std::string> config;
  // Values carried along and not compared (e.g. the running loss of the epoch).
  std::map<std::string, std::string> extra;
};

// A checkpoint file read and validated, not yet applied.
struct CheckpointFile {
  std::string path;  // the file it came from
  CheckpointInfo info;
  SafetensorsFile file;
};

namespace checkpoint_detail {

constexpr const char* kFormat = "varnet-checkpoint";
constexpr const char* kVersion = "1";

inline std::string dtype_of(float) {
  return "F32";
}
inline std::string dtype_of(double) {
  return "F64";
}

inline void feed(uLong& crc, const void* data, size_t n) {
  const auto* p = static_cast<const Bytef*>(data);
  while (n > 0) {
    const auto chunk = static_cast<uInt>(std::min<size_t>(n, size_t(1) << 30));
    crc = crc32(crc, p, chunk);
    p += chunk;
    n -= chunk;
  }
}

inline void feed_text(uLong& crc, const std::string& s) {
  feed(crc, s.data(), s.size());
  feed(crc, "", 1);  // the terminating zero separates fields
}

// CRC-32 of every metadata entry but "checksum", then each tensor's name, dtype, shape and
// bytes in file order: any single flipped bit anywhere in what a checkpoint says is detected.
inline std::string checksum(const SafetensorsFile& f) {
  uLong crc = crc32(0L, Z_NULL, 0);
  for (const auto& [key, value] : f.metadata) {
    if (key == "checksum") continue;
    feed_text(crc, key);
    feed_text(crc, value);
  }
  for (const StoredTensor& t : f.tensors) {
    feed_text(crc, t.name);
    feed_text(crc, t.dtype);
    feed_text(crc, safetensors_detail::shape_text(t.shape));
    feed(crc, t.bytes.data(), t.bytes.size());
  }
  char buf[16];
  std::snprintf(buf, sizeof buf, "crc32:%08lx", static_cast<unsigned long>(crc & 0xFFFFFFFFul));
  return buf;
}

// A metadata value as a non-negative decimal integer of at most `max`.
inline uint64_t parse_count(const std::map<std::string, std::string>& meta, const std::string& key,
                            uint64_t max, const std::string& path) {
  const auto it = meta.find(key);
  check(it != meta.end(), path, str("a metadata entry \"", key, "\""), "none");
  const std::string& s = it->second;
  const std::string what = str("\"", key, "\" as a decimal integer in [0, ", max, "]");
  check(!s.empty() && s.size() <= 20, path, what, "\"", s, "\"");
  uint64_t v = 0;
  for (char c : s) {
    check(c >= '0' && c <= '9', path, what, "\"", s, "\"");
    const auto digit = static_cast<uint64_t>(c - '0');
    check(v <= (max - digit) / 10, path, what, "\"", s, "\"");
    v = v * 10 + digit;
  }
  return v;
}

// The first non-finite value among count values at data, or -1.
template <class T>
int64_t first_non_finite(const T* data, int64_t count) {
  for (int64_t i = 0; i < count; ++i)
    if (!std::isfinite(data[i])) return i;
  return -1;
}

// Removes "<path>.tmp.<digits and dots>": what save_safetensors leaves when its process is
// killed mid-write (a run killed many times would otherwise fill the disk). Best effort.
inline void remove_stale_temporaries(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const std::string prefix = target.filename().string() + ".tmp.";
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::error_code ec;
  std::vector<fs::path> stale;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    if (name.find_first_not_of("0123456789.", prefix.size()) == std::string::npos)
      stale.push_back(it->path());
  }
  for (const fs::path& p : stale) fs::remove(p, ec);
}

}  // namespace checkpoint_detail

// The file that keeps the previous checkpoint.
inline std::string previous_checkpoint_path(const std::string& path) {
  return path + ".prev";
}

// Reads and validates a checkpoint: the safetensors structure, format and version, the
// checksum, every metadata field, and F32/F64 tensors. Nothing is applied.
inline CheckpointFile read_checkpoint(const std::string& path) {
  namespace cd = checkpoint_detail;
  CheckpointFile out;
  out.path = path;
  out.file = load_safetensors(path);
  const auto& meta = out.file.metadata;
  const auto value = [&](const std::string& key) {
    const auto it = meta.find(key);
    check(it != meta.end(), path, str("a metadata entry \"", key, "\""),
          "none (not a varnet checkpoint?)");
    return it->second;
  };
  const std::string format = value("format");
  check(format == cd::kFormat, path, str("format \"", cd::kFormat, "\""), "\"", format, "\"",
        format == "varnet" ? " (a saved model, not a checkpoint)" : "");
  const std::string version = value("version");
  check(version == cd::kVersion, path, str("checkpoint version ", cd::kVersion), "\"", version,
        "\"");
  const std::string stored = value("checksum");
  const std::string computed = cd::checksum(out.file);
  check(stored == computed, path, str("checksum ", stored, " (as stored)"), computed,
        " over the contents (the file is corrupt)");

  constexpr uint64_t kMaxInt = uint64_t(std::numeric_limits<int64_t>::max());
  CheckpointInfo& info = out.info;
  info.step = cd::parse_count(meta, "step", std::numeric_limits<uint32_t>::max(), path);
  info.epoch = int64_t(cd::parse_count(meta, "epoch", kMaxInt, path));
  info.step_in_epoch = int64_t(cd::parse_count(meta, "step_in_epoch", kMaxInt, path));
  info.seed = cd::parse_count(meta, "seed", std::numeric_limits<uint64_t>::max(), path);
  info.optimizer = value("optimizer");
  check(!info.optimizer.empty(), path, "an optimizer name", "an empty one");
  info.optimizer_steps = int64_t(cd::parse_count(meta, "optimizer.steps", kMaxInt, path));
  static const char* const kKnown[] = {"format", "version",   "checksum",
                                       "step",   "epoch",     "step_in_epoch",
                                       "seed",   "optimizer", "optimizer.steps"};
  for (const auto& [key, v] : meta) {
    if (key.rfind("config.", 0) == 0) {
      info.config[key.substr(7)] = v;
    } else if (key.rfind("extra.", 0) == 0) {
      info.extra[key.substr(6)] = v;
    } else {
      check(std::find(std::begin(kKnown), std::end(kKnown), key) != std::end(kKnown), path,
            "only the metadata of a checkpoint (format, version, checksum, step, epoch, "
            "step_in_epoch, seed, optimizer, optimizer.steps, config.*, extra.*)",
            "\"", key, "\"");
    }
  }
  for (const StoredTensor& t : out.file.tensors)
    check(t.dtype == "F32" || t.dtype == "F64", path + ": tensor \"" + t.name + "\"",
          "dtype F32 or F64", t.dtype);
  return out;
}

// Reads `path`, or "<path>.prev" when `path` is missing or fails validation (a damaged disk, a
// copy cut short). `note` (optional) receives why `path` was passed over; the returned file's
// path says which one was read. Throws when neither is readable, with both reasons.
inline CheckpointFile read_checkpoint_or_previous(const std::string& path,
                                                  std::string* note = nullptr) {
  std::string first;
  try {
    return read_checkpoint(path);
  } catch (const Error& e) {
    first = e.what();
  }
  const std::string prev = previous_checkpoint_path(path);
  std::error_code ec;
  if (!std::filesystem::exists(prev, ec)) throw Error(first);
  try {
    CheckpointFile f = read_checkpoint(prev);
    if (note) *note = first;
    return f;
  } catch (const Error& e) {
    throw Error(first + "; and the previous checkpoint: " + e.what());
  }
}

// Copies a validated checkpoint into the network and the optimizer and returns where the run
// stands. `config` and `seed` are this run's: any difference from the checkpoint's is an error
// listing every differing setting. On any error nothing is changed.
template <class T, class Optimizer>
CheckpointInfo apply_checkpoint(const CheckpointFile& ckpt, Network<T>& net, Optimizer& opt,
                                std::map<std::string, std::string> config, uint64_t seed) {
  namespace cd = checkpoint_detail;
  const std::string& path = ckpt.path;
  const CheckpointInfo& info = ckpt.info;
  check(net.built(), "apply_checkpoint", "a built network", "build() not called");
  check(info.optimizer == Optimizer::name(), path,
        str("a checkpoint of the optimizer of this run, ", Optimizer::name()), info.optimizer);
  for (const auto& [key, v] : opt.settings()) config["optimizer." + key] = v;

  // Every setting that differs, in both directions.
  std::string diff;
  const auto note = [&](const std::string& key, const std::string& then, const std::string& now) {
    diff +=
        str(diff.empty() ? "" : "; ", key, " ", then, " in the checkpoint, ", now, " in this run");
  };
  if (info.seed != seed) note("seed", str(info.seed), str(seed));
  for (const auto& [key, v] : info.config) {
    const auto it = config.find(key);
    if (it == config.end())
      note(key, "\"" + v + "\"", "unset");
    else if (it->second != v)
      note(key, "\"" + v + "\"", "\"" + it->second + "\"");
  }
  for (const auto& [key, v] : config)
    if (!info.config.count(key)) note(key, "unset", "\"" + v + "\"");
  check(diff.empty(), path, "a checkpoint of a run configured as this one", diff);

  // The tensors: exactly the network's, then the optimizer's, in T's dtype (a resumed run must
  // see the very bits it saved).
  const std::string dtype = cd::dtype_of(T());
  const auto find = [&](const std::string& name, const std::vector<int64_t>& dims) {
    const StoredTensor* t = ckpt.file.find(name);
    check(t != nullptr, path, str("a tensor named '", name, "'"),
          "none (a checkpoint of another network?)");
    check(t->shape == dims, path,
          str("'", name, "' of shape ", safetensors_detail::shape_text(dims)), "shape ",
          safetensors_detail::shape_text(t->shape));
    check(t->dtype == dtype, path, str("'", name, "' as ", dtype, " (this run's scalar type)"),
          t->dtype);
    return t;
  };
  std::vector<T> params(net.params().size()), state(net.state().size());
  const auto& entries = net.table().entries();
  for (const auto& e : entries) {
    const StoredTensor* t = find(e.name, detail::dims_of(e.shape));
    T* dst = (e.trainable ? params.data() : state.data()) + e.offset;
    copy_out(*t, dst, e.shape.numel(), path);
    const int64_t bad = cd::first_non_finite(dst, e.shape.numel());
    if (bad >= 0)
      fail(path + ": tensor \"" + e.name + "\"", "finite values",
           str(dst[bad], " at element ", bad));
  }
  auto buffers = opt.buffers();
  std::vector<std::vector<T>> values;
  for (const auto& [name, buf] : buffers) {
    check(buf->size() == net.params().size(), "apply_checkpoint",
          str("optimizer buffers of ", net.params().size(), " values (one per parameter)"),
          buf->size(), " in '", name, "'");
    const std::string full = "optimizer." + name;
    const StoredTensor* t = find(full, {int64_t(buf->size())});
    values.emplace_back(buf->size());
    copy_out(*t, values.back().data(), int64_t(buf->size()), path);
    const int64_t bad = cd::first_non_finite(values.back().data(), int64_t(buf->size()));
    if (bad >= 0)
      fail(path + ": tensor \"" + full + "\"", "finite values",
           str(values.back()[size_t(bad)], " at element ", bad));
  }
  check(ckpt.file.tensors.size() == entries.size() + buffers.size(), path,
        str(entries.size() + buffers.size(), " tensors (the network's ", entries.size(),
            " and the optimizer's ", buffers.size(), ")"),
        ckpt.file.tensors.size());

  // Everything checked: copy into the existing buffers (layers hold pointers into them).
  std::copy(params.begin(), params.end(), net.params().begin());
  std::copy(state.begin(), state.end(), net.state().begin());
  for (size_t i = 0; i < buffers.size(); ++i)
    std::copy(values[i].begin(), values[i].end(), buffers[i].second->begin());
  opt.set_steps(info.optimizer_steps);
  return info;
}

// Reads (falling back to "<path>.prev", see read_checkpoint_or_previous) and applies.
template <class T, class Optimizer>
CheckpointInfo load_checkpoint(const std::string& path, Network<T>& net, Optimizer& opt,
                               const std::map<std::string, std::string>& config, uint64_t seed,
                               std::string* note = nullptr) {
  return apply_checkpoint(read_checkpoint_or_previous(path, note), net, opt, config, seed);
}

// Saves a checkpoint atomically. Non-finite values throw NonFiniteError before anything is
// written, naming the tensor and its layer. A valid existing checkpoint is kept as
// "<path>.prev" (hard link, or copy, then rename), so a damaged newest file has a fallback.
template <class T, class Optimizer>
void save_checkpoint(const std::string& path, const Network<T>& net, const Optimizer& opt,
                     CheckpointInfo info) {
  namespace cd = checkpoint_detail;
  namespace fs = std::filesystem;
  check(net.built(), "save_checkpoint", "a built network", "build() not called");
  check(info.epoch >= 0 && info.step_in_epoch >= 0 &&
            info.step <= std::numeric_limits<uint32_t>::max(),
        "save_checkpoint(" + path + ")", "a step below 2^32 and a non-negative epoch and step",
        "step ", info.step, ", epoch ", info.epoch, ", step in epoch ", info.step_in_epoch);
  const auto refuse = [&](const std::string& tensor, const std::string& layer, T v, int64_t i) {
    throw NonFiniteError(str(
        "checkpoint ", path, " at step ", info.step, ": expected finite values, found ", v, " in '",
        tensor, "'", layer, " at element ", i, "; nothing written, the previous checkpoint stays"));
  };
  SafetensorsFile f;
  for (const auto& e : net.table().entries()) {
    const T* src = (e.trainable ? net.params().data() : net.state().data()) + e.offset;
    const int64_t bad = cd::first_non_finite(src, e.shape.numel());
    if (bad >= 0) refuse(e.name, " (layer '" + net.layer(e.layer).name() + "')", src[bad], bad);
    f.tensors.push_back(make_stored(e.name, detail::dims_of(e.shape), src));
  }
  for (const auto& [name, buf] : opt.buffers()) {
    const int64_t bad = cd::first_non_finite(buf->data(), int64_t(buf->size()));
    if (bad >= 0) refuse("optimizer." + name, " (the optimizer's state)", (*buf)[size_t(bad)], bad);
    f.tensors.push_back(make_stored("optimizer." + name, {int64_t(buf->size())}, buf->data()));
  }
  auto& meta = f.metadata;
  meta["format"] = cd::kFormat;
  meta["version"] = cd::kVersion;
  meta["step"] = std::to_string(info.step);
  meta["epoch"] = std::to_string(info.epoch);
  meta["step_in_epoch"] = std::to_string(info.step_in_epoch);
  meta["seed"] = std::to_string(info.seed);
  meta["optimizer"] = Optimizer::name();
  meta["optimizer.steps"] = std::to_string(opt.steps());
  for (const auto& [key, v] : opt.settings()) info.config["optimizer." + key] = v;
  for (const auto& [key, v] : info.config) meta["config." + key] = v;
  for (const auto& [key, v] : info.extra) meta["extra." + key] = v;
  meta["checksum"] = cd::checksum(f);

  cd::remove_stale_temporaries(path);
  // Keep the current checkpoint as .prev, but only a valid one: never replace a good fallback
  // by a damaged file. Link (or copy) to a temporary name first, then rename: .prev is always
  // either the old fallback or the new one.
  std::error_code ec;
  if (fs::exists(path, ec)) {
    bool valid = true;
    try {
      read_checkpoint(path);
    } catch (const Error&) {
      valid = false;
    }
    if (valid) {
      const std::string prev = previous_checkpoint_path(path);
      const std::string staging = prev + ".tmp";
      fs::remove(staging, ec);
      ec.clear();
      fs::create_hard_link(path, staging, ec);
      if (ec) {
        ec.clear();
        fs::copy_file(path, staging, fs::copy_options::overwrite_existing, ec);
      }
      if (!ec) fs::rename(staging, prev, ec);
      if (ec) {
        const std::string why = ec.message();
        fs::remove(staging, ec);
        fail(path, "to keep the previous checkpoint as " + prev, "an error: " + why);
      }
      // rename() between two links to one file (a save killed after keeping .prev) does
      // nothing and succeeds: the staging name may remain.
      fs::remove(staging, ec);
    }
  }
  save_safetensors(path, f);
}

}  // namespace varnet
