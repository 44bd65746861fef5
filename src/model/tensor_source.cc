// CheckpointSource and MapSource; see tensor_source.h.
#include "switchyard/model/tensor_source.h"

#include "switchyard/core/error.h"
#include "switchyard/io/safetensors.h"

namespace sy {

CheckpointSource::CheckpointSource(std::shared_ptr<SafetensorsCheckpoint> checkpoint)
    : checkpoint_(std::move(checkpoint)) {}
bool CheckpointSource::contains(const std::string& name) const { return checkpoint_->contains(name); }
Tensor CheckpointSource::tensor(const std::string& name) const { return checkpoint_->tensor(name); }
std::vector<std::string> CheckpointSource::names() const { return checkpoint_->names(); }
std::string CheckpointSource::where() const { return checkpoint_->dir(); }

Tensor MapSource::tensor(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) throw make_error<FormatError>("model", "no tensor \"", name, "\" in memory");
  return it->second;
}

std::vector<std::string> MapSource::names() const {
  std::vector<std::string> out;
  for (const auto& kv : tensors_) out.push_back(kv.first);
  return out;
}

std::vector<std::string> CreatingSource::names() const {
  std::vector<std::string> out;
  for (const auto& kv : tensors_) out.push_back(kv.first);
  return out;
}

Tensor CreatingSource::create(const std::string& name, const Shape& shape) {
  auto it = tensors_.find(name);
  if (it != tensors_.end()) return it->second;
  return tensors_[name] = Tensor::zeros(shape, DType::kF32);
}

}  // namespace sy
