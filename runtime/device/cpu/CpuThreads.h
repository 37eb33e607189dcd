//===- CpuThreads.h - Thread settings for CPU artifacts ---------*- C++ -*-===//
//
// How a CPU artifact's threads are set up: its kernels are OpenMP parallel
// loops (LLVM libomp) that call single-threaded BLAS. Lives with the CPU
// device so that the generic artifact loader holds nothing CPU-specific.
//
//===----------------------------------------------------------------------===//

#ifndef MOMAC_RUNTIME_DEVICE_CPU_CPUTHREADS_H
#define MOMAC_RUNTIME_DEVICE_CPU_CPUTHREADS_H

namespace momac::cpu {

/// Sets the environment that the OpenMP and BLAS libraries read when a CPU
/// artifact loads them: call before dlopen.
void configureThreadsBeforeLoad();

} // namespace momac::cpu

#endif // MOMAC_RUNTIME_DEVICE_CPU_CPUTHREADS_H
