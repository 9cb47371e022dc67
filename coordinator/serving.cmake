# Serving (included from coordinator/CMakeLists.txt): access control, metrics, the gRPC guard
# and the OpenAI-compatible HTTP front door. HTTP needs cpp-httplib (Debian: libcpp-httplib-dev,
# found by pkg-config; HTTPS needs OpenSSL) and nlohmann-json; without them
# the coordinator builds and --http-listen is refused. The gRPC guard and front door
# (grpc_guard.cpp) exist only with gRPC (PIPELLM_HAVE_GRPC).
find_package(PkgConfig QUIET)
if(PkgConfig_FOUND)
  pkg_check_modules(PIPELLM_HTTPLIB QUIET IMPORTED_TARGET cpp-httplib)
endif()
find_path(NLOHMANN_JSON_INCLUDE_DIR nlohmann/json.hpp)

add_library(pipellm_serving STATIC access_control.cpp generation.cpp metered_backend.cpp metrics.cpp port_probe.cpp)
pipellm_target_defaults(pipellm_serving)
target_link_libraries(pipellm_serving PUBLIC pipellm_coordinator_core)

if(PIPELLM_HTTPLIB_FOUND AND NLOHMANN_JSON_INCLUDE_DIR)
  message(STATUS "PipeLLM: HTTP front door with cpp-httplib ${PIPELLM_HTTPLIB_VERSION}")
  add_library(pipellm_http STATIC http_embeddings.cpp http_gate.cpp http_generation.cpp http_infill.cpp http_llama_routes.cpp http_openai.cpp http_origin.cpp
                                  http_server.cpp http_tls.cpp http_tool_calls.cpp http_tool_request.cpp)
  target_link_libraries(pipellm_http PUBLIC pipellm_serving PkgConfig::PIPELLM_HTTPLIB)
  # HTTPS is terminated by the gate itself (http_tls.cpp), with OpenSSL.
  find_package(OpenSSL QUIET)
  if(OpenSSL_FOUND)
    target_compile_definitions(pipellm_http PRIVATE PIPELLM_HAVE_OPENSSL=1)
    target_link_libraries(pipellm_http PUBLIC OpenSSL::SSL OpenSSL::Crypto)
  else()
    message(STATUS "PipeLLM: no OpenSSL: the HTTP front door refuses --tls-cert")
  endif()
  set(PIPELLM_HTTP_ENABLED ON)
else()
  message(STATUS "PipeLLM: HTTP front door skipped (needs cpp-httplib via pkg-config and nlohmann-json)")
  add_library(pipellm_http STATIC http_disabled.cpp)
  target_link_libraries(pipellm_http PUBLIC pipellm_serving)
  set(PIPELLM_HTTP_ENABLED OFF)
endif()
pipellm_target_defaults(pipellm_http)
if(NLOHMANN_JSON_INCLUDE_DIR)
  target_include_directories(pipellm_http SYSTEM PUBLIC ${NLOHMANN_JSON_INCLUDE_DIR})
endif()

target_sources(pipellm-coordinator PRIVATE serving_options.cpp serving_setup.cpp strict_config.cpp)
target_link_libraries(pipellm-coordinator PRIVATE pipellm_http)
if(PIPELLM_HAVE_GRPC)
  # The gRPC service drives requests through Generation (generation.cpp), as HTTP does.
  target_link_libraries(pipellm_grpc_service PUBLIC pipellm_serving)
  add_library(pipellm_grpc_guard STATIC grpc_guard.cpp grpc_interceptors.cpp)
  pipellm_target_defaults(pipellm_grpc_guard)
  target_link_libraries(pipellm_grpc_guard PUBLIC pipellm_grpc_service pipellm_serving gRPC::grpc++_reflection)
  # The one place the gRPC door is switched: serving_setup.cpp's start_grpc().
  target_compile_definitions(pipellm-coordinator PRIVATE PIPELLM_HAVE_GRPC=1)
  target_link_libraries(pipellm-coordinator PRIVATE pipellm_grpc_guard)
  # pipellm-client: API key metadata and TLS.
  target_sources(pipellm-client PRIVATE client_channel.cpp)
endif()

if(PIPELLM_BUILD_TESTS)
  add_subdirectory(${PROJECT_SOURCE_DIR}/tests/serving ${CMAKE_BINARY_DIR}/tests/serving)
endif()
