//===- ShardUnits.cpp - How FSDP groups and splits the parameters ---------===//

#include "lib/config/ShardUnits.h"

#include "llvm/ADT/StringMap.h"

using namespace momac;

static int64_t roundUp(int64_t value, int64_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}

int64_t momac::shardElements(int64_t elements, int64_t ranks) {
  return roundUp((elements + ranks - 1) / ranks, kShardAlignment);
}

int64_t ShardUnit::shardElements(int64_t ranks) const {
  return momac::shardElements(elements, ranks);
}

std::string momac::shardUnitName(llvm::StringRef parameter) {
  if (parameter.consume_front("layers.")) {
    llvm::StringRef layer = parameter.take_until([](char c) { return c == '.'; });
    return "layers." + layer.str();
  }
  return parameter.str();
}

std::vector<ShardUnit> momac::planShardUnits(
    llvm::ArrayRef<std::pair<std::string, int64_t>> parameters) {
  std::vector<ShardUnit> units;
  llvm::StringMap<size_t> unitIndex;
  for (auto [index, parameter] : llvm::enumerate(parameters)) {
    std::string name = shardUnitName(parameter.first);
    auto [it, inserted] = unitIndex.try_emplace(name, units.size());
    if (inserted)
      units.push_back(ShardUnit{name, {}, {}, 0});
    ShardUnit &unit = units[it->second];
    unit.parameters.push_back(int64_t(index));
    unit.offsets.push_back(unit.elements);
    unit.elements = roundUp(unit.elements + parameter.second, kShardAlignment);
  }
  return units;
}
