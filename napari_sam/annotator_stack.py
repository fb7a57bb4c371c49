"""The annotator's long, cancelable jobs: embedding a whole stack and propagation."""

from __future__ import annotations

from napari.utils.notifications import show_error

from sam_core.errors import SamscopeError
from sam_core.propagation import iter_propagation

from . import jobs
from .image_source import image_plane


class StackJobsMixin:
    """compute_embedding / propagate / cancel for `AnnotatorWidget` (uses its state)."""

    def compute_embedding(self, all_slices: bool = True) -> None:
        """Embed the image (every slice of a stack) ahead of clicking, with progress."""
        if self._long_worker is not None:
            show_error("another computation is running; wait or press Cancel")
            return
        try:
            layout = self.image_layout()
            model, data, rgb, channel = self._embedding_job_parts()
        except SamscopeError as exc:
            show_error(str(exc))
            return
        zs = (
            [None]
            if layout.n_slices is None
            else (list(range(layout.n_slices)) if all_slices else [self.current_z()])
        )

        def work():
            for done, z in enumerate(zs, 1):
                self._embedding(model, data, rgb, channel, z)
                yield done, len(zs)
            return len(zs)

        self._busy("computing embeddings…", len(zs))
        self._long_worker = jobs.start_generator_job(
            work, self._on_progress, self._on_embeddings_done, "embedding"
        )

    def _on_progress(self, value: tuple[int, int]) -> None:
        if self._alive:
            self._busy(f"{value[0]} / {value[1]}", value[1], value[0])

    def _on_embeddings_done(self, result: object) -> None:
        self._long_worker = None
        if self._alive:
            self._idle(f"embeddings ready ({result} slices)" if jobs.report(result) else "stopped")

    def propagate(self) -> None:
        """Propagate the previewed object up and down the stack (result shown in preview)."""
        if self._long_worker is not None:
            show_error("another computation is running; wait or press Cancel")
            return
        try:
            layout = self.image_layout()
            model, data, rgb, channel = self._embedding_job_parts()
        except SamscopeError as exc:
            show_error(str(exc))
            return
        if layout.n_slices is None:
            show_error("propagation needs a stack (Z, H, W); this image is 2-D")
            return
        if self.session(model).tile_layout(layout.spatial_hw) is not None:
            show_error(
                f"propagation works on slices up to {self.session(model).max_side} px a side "
                "(untiled); crop the stack or segment slice by slice"
            )
            return
        if self.candidates is None or self.candidates.z is None:
            show_error("segment an object on one slice first (click on it), then propagate")
            return
        start = self.candidates
        start_mask, start_logits = start.masks[start.choice], start.logits[start.choice]
        min_iou, max_steps = self.min_iou_spin.value(), self.max_slices_spin.value() or None
        self.object_masks = {start.z: start_mask}

        def work():
            session = self.session(model)
            predictor = session.predictor

            def embedding_for(z: int):
                return self._embedding(model, data, rgb, channel, z)

            steps = iter_propagation(
                predictor,
                embedding_for,
                start.z,
                start_mask,
                layout.n_slices,
                start_logits,
                min_iou=min_iou,
                max_steps=max_steps,
                slice_for=lambda z: image_plane(data, rgb, z, channel),
            )
            done = 0
            while True:
                with session.lock:  # held per step so previews can interleave
                    step = next(steps, None)
                if step is None:
                    return done
                done += 1
                yield done, layout.n_slices - 1, step

        self._busy("propagating…", layout.n_slices - 1)
        self._long_worker = jobs.start_generator_job(
            work, self._on_propagation_step, self._on_propagation_done, "propagation"
        )

    def _on_propagation_step(self, value: tuple) -> None:
        done, total, step = value
        if not self._alive:
            return
        self._busy(f"propagating: slice {step.index}", total, done)
        if step.mask is not None:
            self.object_masks[step.index] = step.mask
            self._draw_object()

    def _on_propagation_done(self, result: object) -> None:
        self._long_worker = None
        if not self._alive:
            return
        ok = jobs.report(result)
        zs = sorted(k for k in self.object_masks if k is not None)
        where = f"slices {zs[0]}–{zs[-1]}" if zs else "no slice"
        self._idle(f"propagated to {where}; C commits" if ok else f"stopped at {where}")
        self._shown_generation = self._generation

    def cancel(self) -> None:
        """Stop the running long job at its next step; drop a pending preview."""
        self._preview_pending = False
        self._commit_pending = False
        worker = self._long_worker
        if worker is not None:
            worker.quit()
        self._generation += 1  # a preview still running is ignored when it returns
        if self._alive:
            self._idle("cancelled")
