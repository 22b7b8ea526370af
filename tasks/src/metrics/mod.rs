//! Masked pixel metrics (method-spec §1): masked PSNR, masked SSIM, r_sim.
