// Registration of the built-in parts (machine/builtins.hpp): every register_* returns its error,
// a name registered twice is named, and the one place that registers everything says so.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "devices/builtin.hpp"
#include "devices/generic.hpp"
#include "devices/pci_front.hpp"
#include "devices/test_device.hpp"
#include "hostdev/host_device.hpp"
#include "machine/builtins.hpp"
#include "pci/pci_bus.hpp"
#include "sdk/device_model.hpp"
#include "vm/device.hpp"

using namespace potemkin;

namespace {

bool mentions(const Error& e, std::string_view what) {
    return e.message.find(what) != std::string::npos;
}

vm::DeviceFactory no_device() {
    return [](const vm::ConfigElement&, vm::DeviceContext&) -> Result<std::unique_ptr<vm::Device>> {
        return fail("not for creating");
    };
}

}  // namespace

TEST(Registration, EachDeviceClassRegisteredTwiceIsAnErrorNamingIt) {
    vm::DeviceClassRegistry classes;
    hostdev::TransportRegistry transports;
    ASSERT_TRUE(devices::register_test_device(classes));
    ASSERT_TRUE(pci::register_pci_bus(classes));
    ASSERT_TRUE(devices::register_pci_front(classes, &transports));
    ASSERT_TRUE(devices::register_generic(classes, &transports));

    auto t = devices::register_test_device(classes);
    ASSERT_FALSE(t);
    EXPECT_TRUE(mentions(t.error(), "'TEST_DEVICE'")) << t.error().message;
    auto p = pci::register_pci_bus(classes);
    ASSERT_FALSE(p);
    EXPECT_TRUE(mentions(p.error(), "'PCI'")) << p.error().message;
    auto f = devices::register_pci_front(classes, &transports);
    ASSERT_FALSE(f);
    EXPECT_TRUE(mentions(f.error(), "'PCI_FRONT'")) << f.error().message;
    auto g = devices::register_generic(classes, &transports);
    ASSERT_FALSE(g);
    EXPECT_TRUE(mentions(g.error(), "'GENERIC'")) << g.error().message;
}

TEST(Registration, BuiltinDeviceClassesStopAtTheFirstDuplicate) {
    vm::DeviceClassRegistry classes;
    ASSERT_TRUE(classes.add("PCI", no_device()));
    auto r = devices::register_builtin_device_classes(classes);
    ASSERT_FALSE(r);
    EXPECT_TRUE(mentions(r.error(), "device class 'PCI' is registered twice")) << r.error().message;
}

TEST(Registration, RegisterBuiltinsFillsFreshRegistries) {
    sdk::ModelRegistry models;
    hostdev::TransportRegistry transports;
    vm::DeviceClassRegistry classes;
    auto r = machine::register_builtins({models, transports, classes});
    ASSERT_TRUE(r) << r.error().message;
    for (const char* c : {"PCI", "PCI_FRONT", "GENERIC", "TEST_DEVICE"})
        EXPECT_NE(classes.find(c), nullptr) << c;
    auto schemes = transports.schemes();
    for (const char* s : {"inproc", "vfio-user"})
        EXPECT_NE(std::find(schemes.begin(), schemes.end(), s), schemes.end()) << s;
    auto list = models.list();
    EXPECT_TRUE(
        std::any_of(list.begin(), list.end(), [](const auto& m) { return m.first == "edu"; }));
}

TEST(Registration, RegisterBuiltinsTwiceIntoTheSameRegistriesNamesTheDuplicate) {
    sdk::ModelRegistry models;
    hostdev::TransportRegistry transports;
    vm::DeviceClassRegistry classes;
    ASSERT_TRUE(machine::register_builtins({models, transports, classes}));
    auto r = machine::register_builtins({models, transports, classes});
    ASSERT_FALSE(r);
    EXPECT_TRUE(mentions(r.error(), "'edu'")) << r.error().message;
}

TEST(Registration, ADuplicateLateInTheChainIsReportedNotLogged) {
    // Models and transports go in; the device classes fail on a class that is there already.
    sdk::ModelRegistry models;
    hostdev::TransportRegistry transports;
    vm::DeviceClassRegistry classes;
    ASSERT_TRUE(classes.add("GENERIC", no_device()));
    auto r = machine::register_builtins({models, transports, classes});
    ASSERT_FALSE(r);
    EXPECT_TRUE(mentions(r.error(), "device class 'GENERIC' is registered twice"))
        << r.error().message;
}

TEST(Registration, ATransportSchemeTakenAlreadyIsNamed) {
    sdk::ModelRegistry models;
    hostdev::TransportRegistry transports;
    vm::DeviceClassRegistry classes;
    ASSERT_TRUE(transports.add(
        "vfio-user",
        [](const hostdev::ParsedUrl&, const hostdev::OpenContext&)
            -> Result<std::unique_ptr<hostdev::HostDevice>> { return fail("fake"); }));
    auto r = machine::register_builtins({models, transports, classes});
    ASSERT_FALSE(r);
    EXPECT_TRUE(mentions(r.error(), "'vfio-user'")) << r.error().message;
}

TEST(Registration, ProcessWideRegistrationGivesEveryCallerTheSameOutcome) {
    auto first = machine::register_builtins();
    ASSERT_TRUE(first) << first.error().message;
    auto second = machine::register_builtins();  // no second attempt, so no duplicate error
    ASSERT_TRUE(second) << second.error().message;
    EXPECT_NE(vm::DeviceClassRegistry::builtin().find("PCI_FRONT"), nullptr);
    auto schemes = hostdev::TransportRegistry::builtin().schemes();
    EXPECT_NE(std::find(schemes.begin(), schemes.end(), "inproc"), schemes.end());
}

// The process-wide registration runs once; when it fails, the first caller and every later one
// get that failure (not only the first, as with a bare std::call_once). Run in a fresh process:
// the registration may have happened in this one already.
TEST(RegistrationDeathTest, AFailedProcessWideRegistrationIsReportedToEveryCaller) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    EXPECT_EXIT(
        {
            // Something took "edu" before the built-ins got there.
            auto squat = sdk::ModelRegistry::builtin().add(
                "edu", "squatter",
                [](const sdk::ModelParams&) -> Result<std::unique_ptr<sdk::DeviceModel>> {
                    return fail("squatter");
                });
            if (!squat) std::exit(5);
            auto first = machine::register_builtins();
            auto second = machine::register_builtins();
            const bool both = !first && !second && first.error().message == second.error().message;
            if (!second) std::fprintf(stderr, "%s\n", second.error().message.c_str());
            std::exit(both ? 3 : 4);
        },
        ::testing::ExitedWithCode(3), "device model 'edu' is already registered");
}
