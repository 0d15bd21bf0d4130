// Autograd for DenseFormer's layer stack: layer outputs are written into one preallocated
// buffer [L, ...] and every DWA is a single matrix product over a strided view of it.
//
// libtorch cannot differentiate through a buffer that is written in place after it was read
// (the version counter check), and tch cannot define custom autograd functions, so the two
// operations live here as `torch::autograd::Function`s:
//
// * push(previous_token, x) copies x into its slot and returns a zero-sized token. Tokens form
//   a chain that every later weighted sum takes as input, so autograd runs push(x)'s backward
//   only after every weighted sum that read x's slot.
// * weighted_sum(weights, token) = Σ_j w_j · buffer[j] over the selected slots (one GEMM).
//   Its backward returns the weights' gradient and adds w ⊗ g into a shared gradient buffer
//   (one rank-1 update over the selected slots); push's backward hands slot j of that buffer
//   to x as its gradient.
//
// Forward reads each selected slot once; backward reads and writes each selected slot once.
// Errors never cross the C boundary: each entry point catches them, keeps the message for
// `strata_kernels_last_error` and returns null.

#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "shim_error.h"

#include <exception>
#include <string>
#include <vector>

using torch::autograd::AutogradContext;
using torch::autograd::Function;
using torch::autograd::variable_list;

// The rayon CPU kernel of strata-kernels (src/ffi.rs): 0 when it wrote `out`.
extern "C" int strata_kernels_cpu_stack_sum(at::Tensor* values, at::Tensor* out,
                                            const double* weights, int64_t start, int64_t step,
                                            int64_t count);

namespace {

thread_local std::string last_error;

// The buffer the layer outputs are written into and the buffer their gradients accumulate in
// (zero-sized until the first backward step needs it). Not tensor arguments of the autograd
// functions, so autograd neither tracks nor version-checks them.
struct Buffers {
  at::Tensor values;
  at::Tensor grads;
};

// Layers start, start + step, ... (count of them) of a stacked [L, ...] tensor, as a view.
at::Tensor selected_layers(const at::Tensor& stack, int64_t start, int64_t step, int64_t count) {
  return stack.narrow(0, start, (count - 1) * step + 1).slice(0, 0, c10::nullopt, step);
}

// Slots start, start + step, ... (count of them) of a contiguous [L, ...] buffer as a
// [count, N] view (written in place by the backward pass).
at::Tensor selected_rows(const at::Tensor& buffer, int64_t start, int64_t step, int64_t count) {
  return selected_layers(buffer.view({buffer.size(0), -1}), start, step, count);
}

// The gradient buffer, allocated and zeroed on first use.
at::Tensor& gradient_buffer(at::Tensor& grads, const at::Tensor& values) {
  if (grads.numel() == 0) {
    grads.resize_(values.sizes());
    grads.zero_();
  }
  return grads;
}

// The weighted sum by the Rust CPU kernel (one streaming pass, rows summed in registers);
// undefined when the values are not on the CPU or the kernel refuses them.
at::Tensor cpu_sum(const at::Tensor& values, const at::Tensor& weights, int64_t start,
                   int64_t step, int64_t count) {
  if (!values.is_cpu()) {
    return at::Tensor();
  }
  at::Tensor w = weights.detach().to(at::kDouble).contiguous();
  at::Tensor out = at::empty(values.sizes().slice(1), values.options());
  at::Tensor v = values;
  int status = strata_kernels_cpu_stack_sum(&v, &out, w.data_ptr<double>(), start, step, count);
  return status == 0 ? out : at::Tensor();
}

// Σ_j w_j · stack[start + j·step] (forward of both autograd functions): the CPU kernel, or one
// GEMM over the [count, N] rows where it does not apply.
at::Tensor forward_sum(const at::Tensor& stack, const at::Tensor& weights, int64_t start,
                       int64_t step, int64_t count) {
  at::Tensor out = cpu_sum(stack, weights, start, step, count);
  if (out.defined()) {
    return out;
  }
  at::Tensor rows = selected_layers(stack, start, step, count).reshape({count, -1});
  return at::mm(weights.to(stack.scalar_type()).unsqueeze(0), rows).view(stack.sizes().slice(1));
}

// d/dw_j = <stack[start + j·step], g> for g [1, N], in the weights' dtype.
at::Tensor weights_grad(const at::Tensor& stack, const at::Tensor& weights, const at::Tensor& g,
                        int64_t start, int64_t step, int64_t count) {
  at::Tensor rows = selected_layers(stack, start, step, count).reshape({count, -1});
  return at::mm(g, rows.t()).view({count}).to(weights.scalar_type());
}

struct PushLayer : public Function<PushLayer> {
  static at::Tensor forward(AutogradContext* ctx, at::Tensor previous, at::Tensor x,
                            Buffers buffers, int64_t slot, bool release_grads) {
    buffers.values.select(0, slot).copy_(x);
    ctx->saved_data["grads"] = buffers.grads;
    ctx->saved_data["slot"] = slot;
    ctx->saved_data["release"] = release_grads;
    return at::empty({0}, x.options());
  }

  static variable_list backward(AutogradContext* ctx, variable_list /*token_grad*/) {
    at::Tensor grads = ctx->saved_data["grads"].toTensor();
    int64_t slot = ctx->saved_data["slot"].toInt();
    at::Tensor grad_x;
    if (grads.numel() > 0) {
      grad_x = grads.select(0, slot).clone();
    }
    if (ctx->saved_data["release"].toBool()) {
      // The first pushed output is the last one whose gradient is handed out.
      grads.set_();
    }
    return {at::Tensor(), grad_x, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

struct StackWeightedSum : public Function<StackWeightedSum> {
  static at::Tensor forward(AutogradContext* ctx, at::Tensor weights, at::Tensor token,
                            Buffers buffers, int64_t start, int64_t step, int64_t count) {
    at::Tensor out = forward_sum(buffers.values, weights, start, step, count);
    ctx->save_for_backward({weights});
    ctx->saved_data["values"] = buffers.values;
    ctx->saved_data["grads"] = buffers.grads;
    ctx->saved_data["start"] = start;
    ctx->saved_data["step"] = step;
    ctx->saved_data["count"] = count;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    at::Tensor weights = ctx->get_saved_variables()[0];
    at::Tensor values = ctx->saved_data["values"].toTensor();
    at::Tensor grads = ctx->saved_data["grads"].toTensor();
    int64_t start = ctx->saved_data["start"].toInt();
    int64_t step = ctx->saved_data["step"].toInt();
    int64_t count = ctx->saved_data["count"].toInt();
    at::Tensor g = grad_outputs[0].to(values.scalar_type()).reshape({1, -1});
    at::Tensor grad_w = weights_grad(values, weights, g, start, step, count);
    // d/dx_j += w_j g, accumulated in place over the selected slots.
    at::Tensor grad_rows = selected_rows(gradient_buffer(grads, values), start, step, count);
    grad_rows.addmm_(weights.to(values.scalar_type()).unsqueeze(1), g);
    return {grad_w, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// Σ_j w_j · stack[start + j·step] for any stacked tensor [L, ...]: the Rust CPU kernel forward
// (any strides; a GEMM elsewhere), and backward the weights' gradient (one GEMV) and w ⊗ g
// placed at the selected layers of the stack's gradient.
struct StridedWeightedSum : public Function<StridedWeightedSum> {
  static at::Tensor forward(AutogradContext* ctx, at::Tensor stack, at::Tensor weights,
                            int64_t start, int64_t step, int64_t count) {
    at::Tensor out = forward_sum(stack, weights, start, step, count);
    ctx->save_for_backward({stack, weights});
    ctx->saved_data["start"] = start;
    ctx->saved_data["step"] = step;
    ctx->saved_data["count"] = count;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    at::Tensor stack = saved[0];
    at::Tensor weights = saved[1];
    int64_t start = ctx->saved_data["start"].toInt();
    int64_t step = ctx->saved_data["step"].toInt();
    int64_t count = ctx->saved_data["count"].toInt();
    at::Tensor g = grad_outputs[0].to(stack.scalar_type()).reshape({1, -1});
    at::Tensor grad_stack;
    at::Tensor grad_w;
    if (ctx->needs_input_grad(1)) {
      grad_w = weights_grad(stack, weights, g, start, step, count);
    }
    if (ctx->needs_input_grad(0)) {
      grad_stack = at::zeros_like(stack);
      at::Tensor w = weights.to(stack.scalar_type()).unsqueeze(1);
      at::Tensor selected = selected_layers(grad_stack, start, step, count);
      selected.copy_(at::mm(w, g).view(selected.sizes()));
    }
    return {grad_stack, grad_w, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

template <typename F>
at::Tensor* guarded(F&& body) {
  at::Tensor* out = nullptr;
  strata_shim::capture(last_error, [&] { out = new at::Tensor(body()); });
  return out;
}

}  // namespace

extern "C" {

// The message of the last failed call on this thread.
const char* strata_kernels_last_error() { return last_error.c_str(); }

// Copies *x into slot `slot` of *values; returns the new chain token (null on error).
// `previous` is null for the first output of the chain.
at::Tensor* strata_stack_push(const at::Tensor* previous, const at::Tensor* x,
                              const at::Tensor* values, const at::Tensor* grads, int64_t slot,
                              int release_grads) {
  return guarded([&] {
    // The first push has no previous token; x stands in (its gradient slot stays empty),
    // since autograd functions take no undefined tensors.
    const at::Tensor& prev = previous ? *previous : *x;
    return PushLayer::apply(prev, *x, Buffers{*values, *grads}, slot, release_grads != 0);
  });
}

// Σ_j weights[j] · values[start + j·step], differentiable w.r.t. the weights and, through
// the token chain, the pushed outputs (null on error).
at::Tensor* strata_stack_weighted_sum(const at::Tensor* weights, const at::Tensor* token,
                                      const at::Tensor* values, const at::Tensor* grads,
                                      int64_t start, int64_t step, int64_t count) {
  return guarded([&] {
    return StackWeightedSum::apply(*weights, *token, Buffers{*values, *grads}, start, step,
                                   count);
  });
}

// Σ_j weights[j] · stack[start + j·step] for a stacked tensor of any strides, differentiable
// w.r.t. the stack and the weights (null on error).
at::Tensor* strata_strided_weighted_sum(const at::Tensor* stack, const at::Tensor* weights,
                                        int64_t start, int64_t step, int64_t count) {
  return guarded(
      [&] { return StridedWeightedSum::apply(*stack, *weights, start, step, count); });
}

}  // extern "C"

extern "C" {

// 1 when autograd records operations on this thread, 0 inside no_grad.
}  // extern "C"
