# The Debian package: `cpack -G DEB` in the build directory (tests/integration/test_package.py
# builds, installs, exercises and purges it). Included from the top-level CMakeLists.txt.
#
# Installs, besides /usr/sbin/snapdedupe (plugin/CMakeLists.txt):
#   /usr/share/man/man8/snapdedupe.8.gz               packaging/snapdedupe.8
#   /usr/share/bash-completion/completions/snapdedupe packaging/snapdedupe.bash-completion
#   /lib/systemd/system/snapdedupe{.service,.timer}, snapdedupe-btrbk.service
#   /usr/lib/snapper/plugins/50-snapdedupe            packaging/snapper-plugin
#   /etc/snapdedupe.conf (a conffile)                 packaging/snapdedupe.conf
#   /var/lib/snapdedupe/                              the indexes and the plugin's queue
# Units go to /lib/systemd/system, where Debian 12's own packages put theirs.
#
# Paths come from GNUInstallDirs (included by the top-level CMakeLists.txt): relative ones land
# under CPACK_PACKAGING_INSTALL_PREFIX (/usr); with CMAKE_INSTALL_PREFIX /usr (the default),
# CMAKE_INSTALL_FULL_SYSCONFDIR is /etc and CMAKE_INSTALL_FULL_LOCALSTATEDIR is /var. GNUInstallDirs
# has no directory for systemd units nor snapper plugins: those two are cache variables.
set(SNAPDEDUPE_SYSTEMD_UNITDIR /lib/systemd/system CACHE PATH
    "Where the systemd units are installed (absolute, or relative to the install prefix)")
set(SNAPDEDUPE_SNAPPER_PLUGINDIR lib/snapper/plugins CACHE PATH
    "snapper's plugin directory (absolute, or relative to the install prefix)")

set(SNAPDEDUPE_PACKAGING_DIR ${CMAKE_CURRENT_LIST_DIR})

# Debian wants man pages compressed, reproducibly (-n: no name or time stamp in the header).
find_program(GZIP_PROGRAM gzip REQUIRED)
add_custom_command(
    OUTPUT ${CMAKE_BINARY_DIR}/snapdedupe.8.gz
    COMMAND ${GZIP_PROGRAM} -9n -c ${SNAPDEDUPE_PACKAGING_DIR}/snapdedupe.8 > ${CMAKE_BINARY_DIR}/snapdedupe.8.gz
    DEPENDS ${SNAPDEDUPE_PACKAGING_DIR}/snapdedupe.8
    VERBATIM)
add_custom_target(snapdedupe_manpage ALL DEPENDS ${CMAKE_BINARY_DIR}/snapdedupe.8.gz)

install(FILES ${CMAKE_BINARY_DIR}/snapdedupe.8.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man8)
install(FILES ${SNAPDEDUPE_PACKAGING_DIR}/snapdedupe.bash-completion
        DESTINATION ${CMAKE_INSTALL_DATADIR}/bash-completion/completions RENAME snapdedupe)
install(FILES ${SNAPDEDUPE_PACKAGING_DIR}/snapdedupe.service ${SNAPDEDUPE_PACKAGING_DIR}/snapdedupe.timer
              ${SNAPDEDUPE_PACKAGING_DIR}/snapdedupe-btrbk.service
        DESTINATION ${SNAPDEDUPE_SYSTEMD_UNITDIR})
install(PROGRAMS ${SNAPDEDUPE_PACKAGING_DIR}/snapper-plugin
        DESTINATION ${SNAPDEDUPE_SNAPPER_PLUGINDIR} RENAME 50-snapdedupe)
install(FILES ${SNAPDEDUPE_PACKAGING_DIR}/snapdedupe.conf DESTINATION ${CMAKE_INSTALL_FULL_SYSCONFDIR})
install(DIRECTORY DESTINATION ${CMAKE_INSTALL_FULL_LOCALSTATEDIR}/lib/snapdedupe
        DIRECTORY_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME snapdedupe)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "snapdedupe developers <snapdedupe@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "make read-only btrfs snapshots share their data again")
set(CPACK_PACKAGE_DESCRIPTION
    "snapdedupe finds data duplicated between btrfs snapshots (snapper's, or btrbk's received
ones) and shares it again with FIDEDUPERANGE. It reads only what changed since the previous
snapshot, from a metadata-only btrfs send. Includes a snapper plugin, a daily systemd timer
and a unit to run after btrbk.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
if(NOT CMAKE_INSTALL_PREFIX STREQUAL CPACK_PACKAGING_INSTALL_PREFIX)
  message(WARNING "CMAKE_INSTALL_PREFIX is ${CMAKE_INSTALL_PREFIX}: the .deb would put the config in "
                  "${CMAKE_INSTALL_FULL_SYSCONFDIR} and the state in ${CMAKE_INSTALL_FULL_LOCALSTATEDIR}, "
                  "not /etc and /var (configure with the default prefix /usr to package)")
endif()
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# The libraries (libbtrfsutil1, libboost-program-options1.74.0, libsqlite3-0, libxxhash0,
# libstdc++6, libc6) come from dpkg-shlibdeps; the tools the program and its
# plugin run are added by hand.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "btrfs-progs")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "snapper, btrbk, btrfsmaintenance")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${SNAPDEDUPE_PACKAGING_DIR}/debian/conffiles
    ${SNAPDEDUPE_PACKAGING_DIR}/debian/postinst
    ${SNAPDEDUPE_PACKAGING_DIR}/debian/prerm
    ${SNAPDEDUPE_PACKAGING_DIR}/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
# The build is RelWithDebInfo; the package carries the program, not its debug info.
set(CPACK_STRIP_FILES ON)
include(CPack)
