"""Many small feature maps tiled on one canvas, so Winograd tiles are not wasted on each map's ragged edge.

SyncNet's 3x3 layers run on 13x13 (lip) and 11x9 (audio) maps. ``F(4x4, 3x3)`` covers an output with 4x4 tiles,
so a 13x13 map costs 16 tiles for 169 outputs (34% of the products thrown away), an 11x9 map 9 tiles for 99.
Laid side by side with one zero row and column between neighbours, the maps share that zero line as their
padding: a padding-1 3x3 convolution of the canvas equals the same convolution of every map (the zero line
after each map is its bottom/right padding and the next map's top/left one), and a 2x10 grid of 13x13 maps
needs 245 tiles instead of 320. After each layer the lines between maps hold values computed across two maps;
:meth:`Canvas.clear_gaps` zeroes them before they serve as padding again.

Axis legend: n maps, c channels, r c grid row/column, h w within a map.
"""
from __future__ import annotations

import torch

__all__ = ["Canvas"]


class Canvas:
    """Geometry of ``count`` maps of ``height x width`` on a grid of cells one pixel larger each way.

    Args:
        count: number of maps.
        height, width: map size.
        output_tile: the Winograd output tile whose count the grid shape minimises.
    """

    def __init__(self, count: int, height: int, width: int, output_tile: int = 4) -> None:
        self.count, self.height, self.width = count, height, width
        self.cell_h, self.cell_w = height + 1, width + 1

        def shape(grid_rows: int) -> tuple[int, int]:
            # The last map's zero line is the canvas border, which convolutions pad themselves.
            return self.cell_h * grid_rows - 1, self.cell_w * _ceil_div(count, grid_rows) - 1

        def tiles(grid_rows: int) -> int:
            rows, cols = shape(grid_rows)
            return _ceil_div(rows, output_tile) * _ceil_div(cols, output_tile)

        self.grid_rows = min(range(1, count + 1), key=lambda grid_rows: (tiles(grid_rows), grid_rows))
        self.grid_cols = _ceil_div(count, self.grid_rows)
        self.canvas_h, self.canvas_w = shape(self.grid_rows)

    def pack(self, maps: torch.Tensor) -> torch.Tensor:
        """(count, c, h, w) maps -> (1, c, canvas_h, canvas_w) channels-last canvas, zero between maps."""
        channels = maps.shape[1]
        if maps.shape[0] != self.count or tuple(maps.shape[2:]) != (self.height, self.width):
            raise ValueError(f"expected {self.count} maps of {self.height}x{self.width}, got {tuple(maps.shape)}")
        maps = maps.permute(0, 2, 3, 1)                                                       # n h w ch
        spare = self.grid_rows * self.grid_cols - self.count   # empty cells of the last grid row
        if spare:
            maps = torch.cat([maps, maps.new_zeros(spare, *maps.shape[1:])])
        full = maps.new_zeros(self.grid_rows, self.cell_h, self.grid_cols, self.cell_w, channels)
        grid = maps.reshape(self.grid_rows, self.grid_cols, self.height, self.width, channels)
        full[:, : self.height, :, : self.width] = grid.permute(0, 2, 1, 3, 4)               # r h c w ch
        canvas = full.view(self.grid_rows * self.cell_h, self.grid_cols * self.cell_w, channels)
        return canvas[: self.canvas_h, : self.canvas_w].permute(2, 0, 1).unsqueeze(0)        # 1 ch H W

    def clear_gaps(self, canvas: torch.Tensor) -> torch.Tensor:
        """Zero the lines between maps of a (1, c, canvas_h, canvas_w) canvas in place; returns it."""
        canvas[:, :, self.height :: self.cell_h].zero_()
        canvas[:, :, :, self.width :: self.cell_w].zero_()
        return canvas

    def cells(self, canvas: torch.Tensor, height: int, width: int, stride: int = 1) -> torch.Tensor:
        """The maps back from a canvas, or from a canvas pooled with ``stride`` (cells shrink by it).

        Returns:
            (count, c, height, width) channels-last copy of each cell's top-left ``height x width`` corner.
        """
        if self.cell_h % stride or self.cell_w % stride:
            raise ValueError(f"{self.cell_h}x{self.cell_w} cells do not align with stride {stride}")
        cell_h, cell_w = self.cell_h // stride, self.cell_w // stride
        _, channels, rows, cols = canvas.shape
        if cell_h * (self.grid_rows - 1) + height > rows or cell_w * (self.grid_cols - 1) + width > cols:
            raise ValueError(f"a {rows}x{cols} canvas does not hold {height}x{width} maps in {cell_h}x{cell_w} cells")
        channel_step, row_step, col_step = canvas.stride()[1:]
        grid = canvas.as_strided(                                                            # r c h w ch
            (self.grid_rows, self.grid_cols, height, width, channels),
            (cell_h * row_step, cell_w * col_step, row_step, col_step, channel_step),
            canvas.storage_offset(),
        )
        maps = grid.reshape(-1, height, width, channels)[: self.count].contiguous()          # n h w ch
        return maps.permute(0, 3, 1, 2)


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)
