"""segcore-plugin-classic: established components the paper plugins build on."""
