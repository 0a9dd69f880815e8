"""Read, recognise, convert and load Swin checkpoints, never running code from the file.

- :mod:`.read`: files (pickles, safetensors, sharded indexes), Hugging Face folders, URLs;
- :mod:`.formats`: the key layouts of official, timm, mmdet / mmseg, mmpretrain, Hugging
  Face, torchvision and our own checkpoints, and their conversion to ours;
- :mod:`.load`: loading into a backbone with a report of every mismatch, conversion to a
  file.
"""
from .formats import (FORMATS, Converted, checkpoint_version, convert, convert_state_dict,
                      detect_format, extract_state_dict)
from .load import (MIN_LOADED_FRACTION, SAVE_FORMATS, convert_file, hf_config_mismatches,
                   load_pretrained, load_state_dict_into, save_atomic)
from .read import Checkpoint, CheckpointError, read_checkpoint, read_source

__all__ = ['FORMATS', 'MIN_LOADED_FRACTION', 'SAVE_FORMATS', 'Checkpoint', 'CheckpointError',
           'Converted', 'checkpoint_version', 'convert', 'convert_file', 'convert_state_dict',
           'detect_format', 'extract_state_dict', 'hf_config_mismatches', 'load_pretrained',
           'load_state_dict_into', 'read_checkpoint', 'read_source', 'save_atomic']
