//! Gradient checkpointing for [`FluxTransformer2DModel`] by block-wise recomputation (tch has
//! no `torch.utils.checkpoint`).
//!
//! Forward: the embeddings run with autograd; the blocks run under `no_grad`, keeping only
//! each block's inputs `(img, txt)`; the head (`norm_out`, `proj_out`) runs with autograd
//! from a detached leaf copy of the last block's output. Memory: one `(B, L + N, dim)` pair
//! per block instead of every block's activations.
//!
//! Backward ([`Checkpointed::backward`]): `loss.backward()` fills the head's gradients and the
//! gradient `g` at the last block's output. Then, from the last block to the first, the block
//! is recomputed with autograd from leaf copies of its inputs and `Σ out ⊙ g` is
//! back-propagated: its parameters accumulate their gradients (as one big backward would),
//! and the leaves' gradients become `g` for the block before. `temb` enters every block and
//! the head, so its gradient is summed over all of them; at the end `Σ img₀ ⊙ g_img +
//! Σ txt₀ ⊙ g_txt + Σ temb ⊙ g_temb` is back-propagated through the embeddings.
//!
//! The recomputation is exact (the blocks have no dropout or randomness), so the gradients
//! equal those of the plain forward up to float summation order.

use super::super::error::ModelError;
use super::transformer::{Embedded, FluxInputs, FluxTransformer2DModel};
use tch::Tensor;

/// The output of a checkpointed forward and what its backward needs.
pub struct Checkpointed<'m> {
    model: &'m FluxTransformer2DModel,
    adapter: Option<String>,
    /// The embeddings, with their autograd graph.
    embedded: Embedded,
    /// Inputs `(img, txt)` of every block, without graph.
    block_inputs: Vec<(Tensor, Tensor)>,
    /// Leaf copies of the last block's image output and of `temb` the head ran from.
    head_img: Tensor,
    head_temb: Tensor,
    /// Shape of the last block's text output (its gradient is zero: the head ignores it).
    txt_shape: Vec<i64>,
    /// The velocity of the target tokens, `(B, N, out_channels)`, with graph up to the head.
    pub output: Tensor,
}

impl std::fmt::Debug for Checkpointed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointed")
            .field("blocks", &self.block_inputs.len())
            .field("output", &self.output.size())
            .finish_non_exhaustive()
    }
}

/// A fresh leaf with the values of `t` that records gradients.
fn leaf(t: &Tensor) -> Tensor {
    t.detach().set_requires_grad(true)
}

/// `t.grad()`, or zeros shaped like `like` when no gradient reached `t`.
fn grad_or_zeros(t: &Tensor, like: &Tensor) -> Tensor {
    let g = t.grad();
    if g.defined() { g } else { like.zeros_like() }
}

impl FluxTransformer2DModel {
    /// [`Self::forward`] with gradient checkpointing; finish with [`Checkpointed::backward`].
    pub fn forward_checkpointed(&self, inp: &FluxInputs) -> Result<Checkpointed<'_>, ModelError> {
        let embedded = self.embed(inp)?;
        let adapter = inp.adapter;
        let mut block_inputs = Vec::with_capacity(self.blocks.len());
        let (img, txt) = tch::no_grad(|| {
            let temb = embedded.temb.detach();
            let (mut img, mut txt) = (embedded.img.detach(), embedded.txt.detach());
            for block in &self.blocks {
                block_inputs.push((img.shallow_clone(), txt.shallow_clone()));
                (img, txt) = block.forward(&img, &txt, &temb, &embedded.rope, adapter);
            }
            (img, txt)
        });
        let head_img = leaf(&img);
        let head_temb = leaf(&embedded.temb);
        let output = self.head(&head_img, &head_temb, embedded.n_target, adapter);
        Ok(Checkpointed {
            model: self,
            adapter: adapter.map(str::to_string),
            embedded,
            block_inputs,
            head_img,
            head_temb,
            txt_shape: txt.size(),
            output,
        })
    }
}

impl Checkpointed<'_> {
    /// Back-propagates `loss` (a scalar computed from [`Self::output`]) through the head, every
    /// block (recomputed) and the embeddings, accumulating into the parameters' `.grad` as
    /// `loss.backward()` on a plain forward would.
    pub fn backward(self, loss: &Tensor) -> Result<(), ModelError> {
        if !loss.requires_grad() {
            return Err(ModelError::Input {
                what: "loss",
                message: "does not require grad (nothing trainable reaches it)".into(),
            });
        }
        loss.f_backward()?;
        let adapter = self.adapter.as_deref();
        let rope = &self.embedded.rope;
        let mut g_img = grad_or_zeros(&self.head_img, &self.head_img);
        let mut g_txt = Tensor::zeros(
            self.txt_shape.as_slice(),
            (self.head_img.kind(), self.head_img.device()),
        );
        let mut g_temb = grad_or_zeros(&self.head_temb, &self.head_temb);
        for (block, (img, txt)) in self.model.blocks.iter().zip(&self.block_inputs).rev() {
            let (img_in, txt_in, temb_in) = (leaf(img), leaf(txt), leaf(&self.embedded.temb));
            let (img_out, txt_out) = block.forward(&img_in, &txt_in, &temb_in, rope, adapter);
            // Σ out ⊙ g: its gradient w.r.t. anything is the vector-Jacobian product with g
            let s = (img_out * &g_img).sum(None) + (txt_out * &g_txt).sum(None);
            s.f_backward()?;
            g_img = grad_or_zeros(&img_in, img);
            g_txt = grad_or_zeros(&txt_in, txt);
            g_temb = &g_temb + grad_or_zeros(&temb_in, &self.embedded.temb);
        }
        let e = &self.embedded;
        let s = (&e.img * &g_img).sum(None)
            + (&e.txt * &g_txt).sum(None)
            + (&e.temb * &g_temb).sum(None);
        if s.requires_grad() {
            s.f_backward()?;
        }
        Ok(())
    }
}
