// TensorSource: named tensors a model can be built from — a safetensors checkpoint on disk, or tensors in
// memory (training parameters, their gradients, pruned or converted weights). The per-architecture
// loaders read through this interface only, so one name map serves every use.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "switchyard/core/tensor.h"

namespace sy {

class SafetensorsCheckpoint;

class TensorSource {
 public:
  virtual ~TensorSource() = default;
  virtual bool contains(const std::string& name) const = 0;
  virtual Tensor tensor(const std::string& name) const = 0;  // throws FormatError when absent
  virtual std::vector<std::string> names() const = 0;         // sorted
  virtual std::string where() const = 0;                      // for messages: a directory or "memory"
  // A source that makes any required tensor on request (fresh initialisation from a config).
  virtual bool creates_missing() const { return false; }
  virtual Tensor create(const std::string& name, const Shape& shape) { return Tensor(); }
};

// Creates every tensor a loader asks for as f32 zeros and remembers it: the parameter set of a config.
class CreatingSource : public TensorSource {
 public:
  bool contains(const std::string& name) const override { return tensors_.count(name) > 0; }
  Tensor tensor(const std::string& name) const override { return tensors_.at(name); }
  std::vector<std::string> names() const override;
  std::string where() const override { return "a fresh initialisation"; }
  bool creates_missing() const override { return true; }
  Tensor create(const std::string& name, const Shape& shape) override;
  std::map<std::string, Tensor>& tensors() { return tensors_; }

 private:
  std::map<std::string, Tensor> tensors_;
};

// Tensors of a checkpoint directory (zero-copy views of its memory maps).
class CheckpointSource : public TensorSource {
 public:
  explicit CheckpointSource(std::shared_ptr<SafetensorsCheckpoint> checkpoint);
  bool contains(const std::string& name) const override;
  Tensor tensor(const std::string& name) const override;
  std::vector<std::string> names() const override;
  std::string where() const override;
  const std::shared_ptr<SafetensorsCheckpoint>& checkpoint() const { return checkpoint_; }

 private:
  std::shared_ptr<SafetensorsCheckpoint> checkpoint_;
};

// Tensors held in memory under their hub names.
class MapSource : public TensorSource {
 public:
  explicit MapSource(std::map<std::string, Tensor> tensors) : tensors_(std::move(tensors)) {}
  bool contains(const std::string& name) const override { return tensors_.count(name) > 0; }
  Tensor tensor(const std::string& name) const override;
  std::vector<std::string> names() const override;
  std::string where() const override { return "memory"; }
  const std::map<std::string, Tensor>& tensors() const { return tensors_; }

 private:
  std::map<std::string, Tensor> tensors_;
};

}  // namespace sy
