# CTest driver (example_device_builds): configure and build examples/device against a potemkin
# build tree, then check the program refuses bad usage and starts serving.
#   cmake -DSOURCE=... -DBINARY=... -DPOTEMKIN_DIR=... -DGENERATOR=Ninja -P build_and_run.cmake
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE} -B ${BINARY} -G ${GENERATOR}
                        -Dpotemkin_DIR=${POTEMKIN_DIR}
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configuring ${SOURCE} failed (${rc})")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BINARY} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building ${SOURCE} failed (${rc})")
endif()
execute_process(COMMAND ${BINARY}/counter-device RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 2)
  message(FATAL_ERROR "counter-device without arguments exited ${rc}, expected 2: ${err}")
endif()
# Serve for a moment: `timeout` sends SIGTERM, which must end it cleanly (exit 0).
set(sock ${BINARY}/counter.sock)
execute_process(COMMAND timeout --preserve-status -s TERM 0.3 ${BINARY}/counter-device --socket ${sock}
                RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0 OR NOT err MATCHES "serving on")
  message(FATAL_ERROR "counter-device --socket exited ${rc}: ${err}")
endif()
if(EXISTS ${sock})
  message(FATAL_ERROR "counter-device left ${sock} behind")
endif()
