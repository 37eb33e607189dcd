//===- ResidentBuffers.cpp - Training state kept in device memory ---------===//

#include "runtime/device/cuda/ResidentBuffers.h"

using namespace momac::cuda;

ResidentBuffers::ResidentBuffers(Backend backend)
    : backend(std::move(backend)) {}

ResidentBuffers::~ResidentBuffers() {
  for (auto &[host, copy] : copies)
    backend.release(copy.device);
}

std::pair<ResidentBuffers::Copy *, size_t>
ResidentBuffers::find(const void *host) {
  const char *address = static_cast<const char *>(host);
  auto it = copies.upper_bound(address);
  if (it == copies.begin())
    return {nullptr, 0};
  --it;
  size_t offset = size_t(address - it->first);
  if (offset >= it->second.bytes)
    return {nullptr, 0};
  return {&it->second, offset};
}

bool ResidentBuffers::keep(void *host, size_t bytes) {
  const char *start = static_cast<const char *>(host);
  if (auto it = copies.find(start); it != copies.end())
    return it->second.bytes == bytes;
  // No overlap with a kept buffer (one starting before `start` and
  // reaching it, or one starting inside): one address, one device copy.
  if (bytes == 0 || find(start).first)
    return false;
  if (auto next = copies.upper_bound(start);
      next != copies.end() && next->first < start + bytes)
    return false;
  void *device = backend.allocate(bytes);
  if (!device)
    return false;
  copies[start] = {device, bytes, Newer::Host};
  stats.deviceBytes += bytes;
  return true;
}

bool ResidentBuffers::isKept(const void *host) const {
  return const_cast<ResidentBuffers *>(this)->find(host).first != nullptr;
}

void *ResidentBuffers::device(void *host, bool read, size_t bytes) {
  auto [copy, offset] = find(host);
  if (!copy || bytes > copy->bytes - offset)
    return nullptr;
  // A write of part of the buffer keeps the rest: that must be current.
  bool whole = offset == 0 && (bytes == 0 || bytes == copy->bytes);
  if ((read || !whole) && copy->newer == Newer::Host) {
    backend.upload(copy->device, static_cast<char *>(host) - offset,
                   copy->bytes);
    ++stats.uploads;
    stats.uploadedBytes += copy->bytes;
    copy->newer = Newer::Neither;
  }
  return static_cast<char *>(copy->device) + offset;
}

void ResidentBuffers::deviceWrote(void *host) {
  if (Copy *copy = find(host).first)
    copy->newer = Newer::Device;
}

void ResidentBuffers::toHost(void *host) {
  auto [copy, offset] = find(host);
  if (!copy || copy->newer != Newer::Device)
    return;
  backend.download(static_cast<char *>(host) - offset, copy->device,
                   copy->bytes);
  ++stats.downloads;
  stats.downloadedBytes += copy->bytes;
  copy->newer = Newer::Neither;
}

void ResidentBuffers::hostChanged(void *host) {
  if (Copy *copy = find(host).first)
    copy->newer = Newer::Host;
}
