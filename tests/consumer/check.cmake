# Installs varnet into a scratch prefix, then configures, builds and runs a consumer project that
# finds it with find_package(varnet). Run by ctest as install_consumer.
file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)
function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}")
  endif()
endfunction()
run(${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${WORK_DIR}/varnet-build -G ${GENERATOR}
    -DCMAKE_INSTALL_PREFIX=${prefix} -DVARNET_BUILD_TESTS=OFF -DVARNET_BUILD_EXAMPLES=OFF
    -DVARNET_BUILD_BENCHMARKS=OFF -DVARNET_ENABLE_CUDA=OFF)
run(${CMAKE_COMMAND} --install ${WORK_DIR}/varnet-build)
run(${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/consumer -B ${WORK_DIR}/consumer-build -G ${GENERATOR}
    -DCMAKE_PREFIX_PATH=${prefix})
run(${CMAKE_COMMAND} --build ${WORK_DIR}/consumer-build)
run(${WORK_DIR}/consumer-build/consumer)
message(STATUS "consumer built and ran against the installed varnet")
