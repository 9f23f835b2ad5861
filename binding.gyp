{
  "targets": [
    {
      "target_name": "ivshmem",
      "sources": [
        "native/addon.cc",
        "native/errors.cc",
        "native/fds.cc",
        "native/mapping.cc",
        "native/mmio.cc",
        "native/eventfd.cc",
        "native/watcher.cc",
        "native/wait.cc",
        "native/unix_socket.cc",
        "native/vfio.cc",
        "native/seals.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "conditions": [["OS!='linux'", { "sources!": ["native/*.cc"] }]]
    }
  ]
}
