// The lab example is a vitest file users copy among their tests; importing it here registers its
// tests, so it runs in the QEMU project as published (it imports the package by name). Every
// test of an example lives in test/examples/; examples/ holds only what users copy.
import '../../examples/lab-test.mjs';
