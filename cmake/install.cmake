# Installation (`cmake --install BUILD --prefix P`) and the Debian package (`cpack -G DEB` in
# BUILD). Included from the top-level CMakeLists.txt after every program's directory, so that
# if(TARGET ...) sees which programs this configuration built (MPI, gRPC and CUDA are optional).
include(GNUInstallDirs)

# The programs: the CLI, the MPI stage worker, the coordinator, its client and its single-process
# head stage (CPU serving without MPI). The coordinator finds pipellm-stage beside itself.
foreach(_prog pipellm pipellm-stage pipellm-coordinator pipellm-client pipellm-link-head)
  if(TARGET ${_prog})
    install(TARGETS ${_prog} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  endif()
endforeach()

# The default model, where an installed pipellm looks for it (<bin>/../share/pipellm/models,
# cli/engine_options.cpp default_model_path).
install(FILES ${PROJECT_SOURCE_DIR}/models/default.gguf DESTINATION ${CMAKE_INSTALL_DATADIR}/pipellm/models)

set(CPACK_PACKAGE_NAME pipellm)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "PipeLLM")
set(CPACK_PACKAGE_CONTACT "PipeLLM maintainers <pipellm@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "GGUF inference engine: CLI, MPI pipeline stages and a gRPC/HTTP coordinator")
set(CPACK_PACKAGE_DESCRIPTION "Runs llama.cpp's GGUF model files on the CPU and on NVIDIA GPUs, with \
pipeline parallelism across GPUs. Ships a 12.6M-parameter default model, so that \
`pipellm generate -p TEXT` works at once.")
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_PACKAGE_NAME pipellm)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # pipellm_<version>_<arch>.deb
set(CPACK_DEBIAN_PACKAGE_SECTION science)
# Depends from the linked shared libraries (dpkg-shlibdeps, in dpkg-dev); libraries that no
# package owns (a CUDA toolkit in /usr/local/cuda) are skipped, so a CUDA build's package
# expects the CUDA runtime on the target as the build found it.
find_program(PIPELLM_DPKG_SHLIBDEPS dpkg-shlibdeps)
if(PIPELLM_DPKG_SHLIBDEPS)
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
else()
  message(STATUS "PipeLLM: no dpkg-shlibdeps (apt install dpkg-dev): the .deb would have no Depends")
endif()
include(CPack)
