"""segcore-plugin-hrnet-fusion: the improved HRNet of Feng and Zhong (BFEM, FUSM, CCSF, AAM; HRNet_S/M/L)."""
