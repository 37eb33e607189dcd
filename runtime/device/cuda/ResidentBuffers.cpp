//===- ResidentBuffers.cpp - Training state kept in device memory ---------===//

#include "runtime/device/cuda/ResidentBuffers.h"

using namespace momac::cuda;

ResidentBuffers::ResidentBuffers(Backend backend)
    : backend(std::move(backend)) {}

ResidentBuffers::~ResidentBuffers() {
  for (auto &[host, copy] : copies)
    backend.release(copy.device);
}

bool ResidentBuffers::keep(void *host, size_t bytes) {
  if (auto it = copies.find(host); it != copies.end())
    return it->second.bytes == bytes;
  void *device = backend.allocate(bytes);
  if (!device)
    return false;
  copies[host] = {device, bytes, Newer::Host};
  stats.deviceBytes += bytes;
  return true;
}

bool ResidentBuffers::isKept(const void *host) const {
  return copies.count(host) != 0;
}

void *ResidentBuffers::device(void *host, bool read) {
  auto it = copies.find(host);
  if (it == copies.end())
    return nullptr;
  Copy &copy = it->second;
  if (read && copy.newer == Newer::Host) {
    backend.upload(copy.device, host, copy.bytes);
    ++stats.uploads;
    stats.uploadedBytes += copy.bytes;
    copy.newer = Newer::Neither;
  }
  return copy.device;
}

void ResidentBuffers::deviceWrote(void *host) {
  if (auto it = copies.find(host); it != copies.end())
    it->second.newer = Newer::Device;
}

void ResidentBuffers::toHost(void *host) {
  auto it = copies.find(host);
  if (it == copies.end() || it->second.newer != Newer::Device)
    return;
  Copy &copy = it->second;
  backend.download(host, copy.device, copy.bytes);
  ++stats.downloads;
  stats.downloadedBytes += copy.bytes;
  copy.newer = Newer::Neither;
}

void ResidentBuffers::hostChanged(void *host) {
  if (auto it = copies.find(host); it != copies.end())
    it->second.newer = Newer::Host;
}
