# Copies a Python tool into bin/ with the project version written into its `MOE_VERSION = None`
# line, so the copy answers --version without the source tree. Run by tools/CMakeLists.txt:
#   cmake -DIN=tool.py -DOUT=bin/tool -DVERSION=0.1.0 -P stamp_version.cmake
file(READ "${IN}" text)
string(FIND "${text}" "\nMOE_VERSION = None\n" at)
if(at EQUAL -1)
  message(FATAL_ERROR "${IN} has no 'MOE_VERSION = None' line to stamp")
endif()
string(REPLACE "\nMOE_VERSION = None\n" "\nMOE_VERSION = \"${VERSION}\"\n" text "${text}")
file(WRITE "${OUT}" "${text}")
file(CHMOD "${OUT}" PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE
     WORLD_READ WORLD_EXECUTE)
