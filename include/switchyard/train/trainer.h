// Trainer: the training loop around TrainableModel — batches from a token source, loss and auxiliary
// losses, gradient clipping, AdamW with a learning-rate schedule, DeepSeek-style score-bias balancing,
// JSON/text logs, and atomic checkpoints that resume bit-exactly.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "switchyard/train/optimizer.h"
#include "switchyard/train/trainable_model.h"

namespace sy::train {

struct TrainerOptions {
  int64_t steps = 1, batch_size = 1, seq_len = 16;
  AdamWOptions adamw;
  LrOptions lr;
  double grad_clip = 1.0;
  StepOptions step_options;  // auxiliary losses and activation recompute
  double bias_update_rate = 0.0;  // score-bias update per step (aux-loss-free balancing); 0 = off
  std::string save_dir;           // empty = no checkpoints
  int64_t save_every = 0;         // 0 = only at the end (when save_dir is set)
};

// Where batches come from: step s, row i -> (inputs, targets) of seq_len tokens each.
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  virtual void batch(int64_t step, int64_t batch_size, int64_t seq_len, std::vector<std::vector<int64_t>>& inputs,
                     std::vector<std::vector<int64_t>>& targets) = 0;
  // Per row, the indices where a new packed document starts (empty when the source does not pack).
  virtual std::vector<std::vector<int64_t>> doc_starts(const std::vector<std::vector<int64_t>>& inputs) const {
    return {};
  }
};

// The --data-ids mode: a flat id array; at step s, row i is ids[(s*B+i)*(T+1) : (s*B+i+1)*(T+1)], inputs its
// first T ids, targets its last T. Throws InvalidArgument when the array is too short for a step.
// With an end-of-document id (>= 0), rows are packed documents: a document starts after each such id, and
// attention and positions respect the boundaries (the --data mode).
class FlatIdSource : public BatchSource {
 public:
  explicit FlatIdSource(std::vector<int64_t> ids, int64_t eos_id = -1) : ids_(std::move(ids)), eos_id_(eos_id) {}
  static std::unique_ptr<FlatIdSource> from_npy(const std::string& path, int64_t eos_id = -1);
  void batch(int64_t step, int64_t batch_size, int64_t seq_len, std::vector<std::vector<int64_t>>& inputs,
             std::vector<std::vector<int64_t>>& targets) override;
  std::vector<std::vector<int64_t>> doc_starts(const std::vector<std::vector<int64_t>>& inputs) const override;
  int64_t size() const { return static_cast<int64_t>(ids_.size()); }

 private:
  std::vector<int64_t> ids_;
  int64_t eos_id_ = -1;
};

struct StepLog {
  int64_t step = 0;  // 1-based count of completed steps
  double loss = 0, aux_loss = 0, z_loss = 0, grad_norm = 0, lr = 0, tokens_per_s = 0;
  std::vector<std::vector<int64_t>> tokens_per_expert;
  int64_t saved_activation_bytes = 0, peak_activation_bytes = 0;  // see StepStats
};

class Trainer {
 public:
  Trainer(std::unique_ptr<TrainableModel> model, const TrainerOptions& options);
  // Runs until options.steps steps are complete (continuing from a resumed step count), calling on_step
  // after each one.
  void run(BatchSource& data, const std::function<void(const StepLog&)>& on_step);
  // Writes SAVE_DIR/step-N atomically (written under a temporary name, then renamed) and points
  // SAVE_DIR/latest at it. The step folder is a Hugging Face checkpoint plus optimizer state.
  std::string save(const std::string& save_dir);
  // Loads the checkpoint that DIR/latest names (or DIR itself if it is a step folder): parameters,
  // optimizer state and the step count.
  void resume(const std::string& dir);
  int64_t step() const { return step_; }
  TrainableModel& model() { return *model_; }

 private:
  std::unique_ptr<TrainableModel> model_;
  TrainerOptions options_;
  AdamW optimizer_;
  int64_t step_ = 0;
};

}  // namespace sy::train
