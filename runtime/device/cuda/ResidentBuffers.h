//===- ResidentBuffers.h - Training state kept in device memory -*- C++ -*-===//
//
// A CUDA artifact's entry points run on device memory, and momarun's
// buffers are host memory. Copying the parameters, gradients and AdamW
// moments both ways at every call would move the whole training state
// across PCIe several times per step; instead momarun keeps them here:
// each kept host buffer has one device copy, and a flag says which side is
// newer. A call uses the device copy, uploading it only when the host side
// changed (when it was kept, or after hostChanged); a result leaves the
// device side newer, and the host sees it only when it asks (toHost: a
// checkpoint, or naming the gradient that went non-finite). What the
// trainer logs (the loss, the gradient norm) is not kept and is copied
// back after each call.
//
// Like the caching allocator this is plain C++ over a backend (the CUDA
// runtime in model.so, or a fake in the unit tests), so the copies a
// training loop makes are counted and tested without a GPU.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_DEVICE_CUDA_RESIDENTBUFFERS_H
#define MOMAC_RUNTIME_DEVICE_CUDA_RESIDENTBUFFERS_H

#include <cstddef>
#include <functional>
#include <map>

namespace momac::cuda {

class ResidentBuffers {
public:
  /// Device memory and copies: `allocate` returns null when the device is
  /// full; `upload(device, host, bytes)`, `download(host, device, bytes)`.
  struct Backend {
    std::function<void *(size_t)> allocate;
    std::function<void(void *)> release;
    std::function<void(void *, const void *, size_t)> upload;
    std::function<void(void *, const void *, size_t)> download;
  };

  explicit ResidentBuffers(Backend backend);
  /// Releases every device copy.
  ~ResidentBuffers();
  ResidentBuffers(const ResidentBuffers &) = delete;
  ResidentBuffers &operator=(const ResidentBuffers &) = delete;

  /// Keeps `host` (`bytes` long) on the device from now on, with the host
  /// side newer: the first call that reads it uploads it. Keeping a buffer
  /// again with the same size changes nothing. False when the device has
  /// no room, or `host` is kept with another size.
  bool keep(void *host, size_t bytes);

  /// The functions below take a kept buffer's start or any address inside
  /// it (a chunk of a shard): that address's place in the device copy.
  bool isKept(const void *host) const;

  /// The device copy of a kept `host` for a call that uses `bytes` from
  /// there: when the call reads it (or writes only part of the buffer)
  /// and the host side is newer, the whole buffer is uploaded first. Null
  /// when `host` is not kept or `bytes` run past the kept buffer's end.
  void *device(void *host, bool read, size_t bytes = 0);
  /// A call wrote (part of) the device copy of `host`: the device side is
  /// newer.
  void deviceWrote(void *host);
  /// Makes the host copy of a kept `host` current (downloads the whole
  /// buffer when the device side is newer). Buffers that are not kept are
  /// left alone.
  void toHost(void *host);
  /// The host copy of `host` was written: the next call reading it
  /// uploads it.
  void hostChanged(void *host);

  struct Statistics {
    size_t uploads = 0, downloads = 0;
    size_t uploadedBytes = 0, downloadedBytes = 0;
    size_t deviceBytes = 0; // held by kept buffers
  };
  Statistics statistics() const { return stats; }

private:
  /// Which side holds values the other does not have yet.
  enum class Newer { Neither, Host, Device };
  struct Copy {
    void *device;
    size_t bytes;
    Newer newer;
  };
  /// The kept buffer holding `host`, with `host`'s offset in it.
  std::pair<Copy *, size_t> find(const void *host);
  Backend backend;
  /// By the host buffer's start, so that an address inside one finds it.
  std::map<const char *, Copy> copies;
  Statistics stats;
};

} // namespace momac::cuda

#endif // MOMAC_RUNTIME_DEVICE_CUDA_RESIDENTBUFFERS_H
